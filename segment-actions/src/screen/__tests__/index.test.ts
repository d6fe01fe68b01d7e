import nock from 'nock'
import { createTestEvent, createTestIntegration } from '@segment/actions-core'
import Destination from '../../index'
import { ENDPOINT, T0, basicAuth, context, settings } from '../../__tests__/__helpers__/events'

const testDestination = createTestIntegration(Destination)

beforeEach(() => nock.cleanAll())
afterEach(() => expect(nock.isDone()).toBe(true))

// The event as Segment delivers it to the screen action, and the Segment event we post for it.
const event = createTestEvent({
  type: 'screen',
  userId: 'u-42',
  anonymousId: 'anon-7f3a',
  messageId: 'm-screen-1',
  timestamp: T0,
  context,
  name: 'Settings',
  properties: { tab: 'billing' }
})
const posted = {
  type: 'screen',
  userId: 'u-42',
  anonymousId: 'anon-7f3a',
  messageId: 'm-screen-1',
  timestamp: T0,
  name: 'Settings',
  properties: { tab: 'billing' },
  context
}

describe('segment-timeline.screen', () => {
  it('posts the event to /v1/segment with the default mapping', async () => {
    nock(ENDPOINT, { reqheaders: { authorization: basicAuth } }).post('/v1/segment', posted).reply(200, { success: true })

    const responses = await testDestination.testAction('screen', { event, settings, useDefaultMappings: true })

    expect(responses.length).toBe(1)
    expect(responses[0].status).toBe(200)
  })

  it('posts a batch as one request to /v1/batch', async () => {
    const second = { ...event, messageId: 'm-screen-2' }
    nock(ENDPOINT)
      .post('/v1/batch', { batch: [posted, { ...posted, messageId: 'm-screen-2' }] })
      .reply(200, { success: true, accepted: 2, duplicates: 0, rejected: [] })

    const responses = await testDestination.testBatchAction('screen', {
      events: [event, second],
      settings,
      useDefaultMappings: true
    })

    expect(responses.length).toBe(1)
    expect(responses[0].status).toBe(200)
    expect(testDestination.results[0].multistatus?.map((result) => result.status)).toEqual([200, 200])
  })

  it('shows our message when we refuse the event, and is not retried', async () => {
    nock(ENDPOINT).post('/v1/segment').reply(400, {
      message: 'The event breaks the Segment Spec: see errors.',
      code: 'invalid_event',
      errors: { userId: ['Send a userId or an anonymousId.'] }
    })

    await expect(testDestination.testAction('screen', { event, settings, useDefaultMappings: true })).rejects.toMatchObject({
      message: 'The event breaks the Segment Spec: see errors.',
      status: 400,
      code: 'invalid_event'
    })
  })

  it('is retried when we are unavailable', async () => {
    nock(ENDPOINT).post('/v1/segment').reply(503, { message: 'Storage is unavailable; retry.', code: 'storage_unavailable' })

    await expect(testDestination.testAction('screen', { event, settings, useDefaultMappings: true })).rejects.toMatchObject({
      message: 'Storage is unavailable; retry.',
      status: 503,
      code: 'RETRYABLE_ERROR'
    })
  })

})
