import nock from 'nock'
import { createTestEvent, createTestIntegration } from '@segment/actions-core'
import Destination from '../../index'
import { T0, context, settings } from '../../__tests__/__helpers__/events'
import { itDeliversLikeEveryAction } from '../../__tests__/__helpers__/delivery'

const testDestination = createTestIntegration(Destination)

beforeEach(() => nock.cleanAll())
afterEach(() => expect(nock.isDone()).toBe(true))

// The event as Segment delivers it to the track action, and the Segment event we post for it.
const event = createTestEvent({
  type: 'track',
  userId: 'u-42',
  anonymousId: 'anon-7f3a',
  messageId: 'm-track-1',
  timestamp: T0,
  context,
  event: 'Order Completed',
  properties: { order_id: 'o-1001', revenue: 99 }
})
const posted = {
  type: 'track',
  userId: 'u-42',
  anonymousId: 'anon-7f3a',
  messageId: 'm-track-1',
  timestamp: T0,
  event: 'Order Completed',
  properties: { order_id: 'o-1001', revenue: 99 },
  context
}

describe('segment-timeline.track', () => {
  itDeliversLikeEveryAction('track', event, posted)

  it('needs an event name before anything is sent', async () => {
    await expect(
      testDestination.testAction('track', { event: { ...event, event: undefined }, settings, useDefaultMappings: true })
    ).rejects.toThrow("missing the required field 'event'")
  })
})
