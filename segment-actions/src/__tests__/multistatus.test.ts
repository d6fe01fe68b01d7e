import nock from 'nock'
import { createTestEvent, createTestIntegration } from '@segment/actions-core'
import type { SegmentEvent } from '@segment/actions-core'
import Definition from '../index'
import { ENDPOINT, T0, settings } from './__helpers__/events'

const testDestination = createTestIntegration(Definition)

beforeEach(() => nock.cleanAll())
afterEach(() => expect(nock.isDone()).toBe(true))

const mapping = { ...Object.fromEntries(Object.entries(Definition.presets?.[0].mapping ?? {})) }

function tracks(count: number, extra: Partial<SegmentEvent> = {}): SegmentEvent[] {
  return Array.from({ length: count }, (_, index) =>
    createTestEvent({
      type: 'track',
      event: 'Order Completed',
      userId: 'u-42',
      messageId: `m-${index}`,
      timestamp: T0,
      context: { ip: '203.0.113.7' },
      ...extra
    })
  )
}

describe('MultiStatus', () => {
  it('gives a refused event its own 4xx and the others 2xx, from one request', async () => {
    nock(ENDPOINT)
      .post('/v1/batch', (body) => body.batch.length === 3)
      .reply(200, {
        success: true,
        accepted: 2,
        duplicates: 0,
        rejected: [
          {
            index: 1,
            messageId: 'm-1',
            errors: { event: ['Missing data for required field.'] },
            status: 400,
            message: 'A track event needs an event name.'
          }
        ]
      })

    const results = await testDestination.executeBatch('track', { events: tracks(3), settings, mapping })

    expect(results.map((result) => result.status)).toEqual([200, 400, 200])
    expect(results[1]).toMatchObject({
      errortype: 'BAD_REQUEST',
      errormessage: 'A track event needs an event name.',
      errorreporter: 'DESTINATION'
    })
    expect(results[0]).toMatchObject({ sent: { type: 'track', messageId: 'm-0' } })
  })

  it("keeps a refusal's own status (413), and reads 400 and the errors when an entry has no status", async () => {
    nock(ENDPOINT)
      .post('/v1/batch')
      .reply(200, {
        success: true,
        accepted: 1,
        duplicates: 0,
        rejected: [
          { index: 0, messageId: 'm-0', errors: { _event: ['The event is 40.1 KiB.'] }, status: 413, message: 'The event is 40.1 KiB.' },
          { index: 2, messageId: 'm-2', errors: { userId: ['Longer than maximum length 255.'] } }
        ]
      })

    const results = await testDestination.executeBatch('track', { events: tracks(3), settings, mapping })

    expect(results.map((result) => result.status)).toEqual([413, 200, 400])
    expect(results[0]).toMatchObject({ errortype: 'PAYLOAD_TOO_LARGE', errormessage: 'The event is 40.1 KiB.' })
    expect(results[2]).toMatchObject({ errormessage: 'userId: Longer than maximum length 255.' })
  })

  it("gives each event its own errors when we refuse the whole batch as invalid", async () => {
    nock(ENDPOINT)
      .post('/v1/batch')
      .reply(400, {
        message: 'Every event of the batch is invalid; the first: The event breaks the Segment Spec.',
        code: 'invalid_batch',
        errors: { '0': { userId: ['Send a userId or an anonymousId.'] }, '1': { _event: ['The event nests too deep.'] } }
      })

    const results = await testDestination.executeBatch('track', { events: tracks(3), settings, mapping })

    expect(results.map((result) => result.status)).toEqual([400, 400, 400])
    expect(results.map((result) => ('errormessage' in result ? result.errormessage : undefined))).toEqual([
      'userId: Send a userId or an anonymousId.',
      'The event nests too deep.',
      'Every event of the batch is invalid; the first: The event breaks the Segment Spec.'
    ])
  })

  it.each([429, 503])('answers %i for every event, so Segment retries them all', async (status) => {
    nock(ENDPOINT).post('/v1/batch').reply(status, { message: 'Retry later.', code: 'rate_limited' })

    const results = await testDestination.executeBatch('track', { events: tracks(2), settings, mapping })

    expect(results).toMatchObject([
      { status, errormessage: 'Retry later.' },
      { status, errormessage: 'Retry later.' }
    ])
  })

  it('answers 503 for every event when we cannot be reached', async () => {
    nock(ENDPOINT).post('/v1/batch').replyWithError('connect ECONNREFUSED')

    const results = await testDestination.executeBatch('track', { events: tracks(2), settings, mapping })

    expect(results.map((result) => result.status)).toEqual([503, 503])
  })

  it('sends an event the runtime refuses to nobody, and the others on', async () => {
    nock(ENDPOINT)
      .post('/v1/batch', (body) => body.batch.length === 1 && body.batch[0].messageId === 'm-1')
      .reply(200, { success: true, accepted: 1, duplicates: 0, rejected: [] })

    const [noName, named] = [tracks(1, { event: undefined })[0], tracks(2)[1]]
    const results = await testDestination.executeBatch('track', { events: [noName, named], settings, mapping })

    expect(results.map((result) => result.status)).toEqual([400, 200])
  })

  it('sends a batch under the limit as one request', async () => {
    nock(ENDPOINT)
      .post('/v1/batch', (body) => body.batch.length === 1000)
      .reply(200, { success: true, accepted: 1000, duplicates: 0, rejected: [] })

    const results = await testDestination.executeBatch('track', { events: tracks(1000), settings, mapping })

    expect(results.length).toBe(1000)
  })

  it('splits only a batch over our 500 KiB request limit, and keeps every result in place', async () => {
    const sizes: number[] = []
    const bytes: number[] = []
    nock(ENDPOINT)
      .post('/v1/batch', (body) => sizes.push(body.batch.length) + bytes.push(JSON.stringify(body).length) > 0)
      .times(3)
      .reply(200, (_uri, body) => ({
        success: true,
        accepted: (body as { batch: unknown[] }).batch.length,
        duplicates: 0,
        rejected: []
      }))

    // 1,000 events of ~1.1 KiB: one request of them would be refused whole (413).
    const events = tracks(1000, { properties: { note: 'x'.repeat(900) } })
    const results = await testDestination.executeBatch('track', { events, settings, mapping })

    expect(sizes.length).toBe(3)
    expect(sizes.reduce((sum, size) => sum + size)).toBe(1000)
    expect(Math.max(...bytes)).toBeLessThanOrEqual(500 * 1024)
    expect(Math.min(...bytes)).toBeGreaterThan(0)
    expect(results.filter((result) => result.status === 200).length).toBe(1000)
  })
})
