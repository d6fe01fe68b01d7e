/**
 * What every action does with one event and with a batch, tested once for each action:
 * the event posted to /v1/segment with Segment's Basic auth, a batch as one /v1/batch
 * request with a per-event result, our refusal shown and not retried, our outage retried.
 * Each action's own test file gives the event as Segment delivers it and what we must receive.
 */
import nock from 'nock'
import type { DataMatcherMap } from 'nock'
import { createTestIntegration } from '@segment/actions-core'
import type { SegmentEvent } from '@segment/actions-core'
import Destination from '../../index'
import { ENDPOINT, basicAuth, settings } from './events'

const testDestination = createTestIntegration(Destination)

export function itDeliversLikeEveryAction(
  action: string,
  event: SegmentEvent,
  posted: DataMatcherMap
): void {
  it('posts the event to /v1/segment with the default mapping', async () => {
    nock(ENDPOINT, { reqheaders: { authorization: basicAuth } }).post('/v1/segment', posted).reply(200, { success: true })

    const responses = await testDestination.testAction(action, { event, settings, useDefaultMappings: true })

    expect(responses.length).toBe(1)
    expect(responses[0].status).toBe(200)
  })

  it('posts a batch as one request to /v1/batch', async () => {
    const secondId = `m-${action}-2`
    nock(ENDPOINT)
      .post('/v1/batch', { batch: [posted, { ...posted, messageId: secondId }] })
      .reply(200, { success: true, accepted: 2, duplicates: 0, rejected: [] })

    const responses = await testDestination.testBatchAction(action, {
      events: [event, { ...event, messageId: secondId }],
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

    await expect(testDestination.testAction(action, { event, settings, useDefaultMappings: true })).rejects.toMatchObject({
      message: 'The event breaks the Segment Spec: see errors.',
      status: 400,
      code: 'invalid_event'
    })
  })

  it('is retried when we are unavailable', async () => {
    nock(ENDPOINT).post('/v1/segment').reply(503, { message: 'Storage is unavailable; retry.', code: 'storage_unavailable' })

    await expect(testDestination.testAction(action, { event, settings, useDefaultMappings: true })).rejects.toMatchObject({
      message: 'Storage is unavailable; retry.',
      status: 503,
      code: 'RETRYABLE_ERROR'
    })
  })
}
