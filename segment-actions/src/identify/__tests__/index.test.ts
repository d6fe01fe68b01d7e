import nock from 'nock'
import { createTestEvent } from '@segment/actions-core'
import { T0, context } from '../../__tests__/__helpers__/events'
import { itDeliversLikeEveryAction } from '../../__tests__/__helpers__/delivery'

beforeEach(() => nock.cleanAll())
afterEach(() => expect(nock.isDone()).toBe(true))

// The event as Segment delivers it to the identify action, and the Segment event we post for it.
const event = createTestEvent({
  type: 'identify',
  userId: 'u-42',
  anonymousId: 'anon-7f3a',
  messageId: 'm-identify-1',
  timestamp: T0,
  context,
  traits: { email: 'ada@example.com', name: 'Ada Lovelace', plan: 'free' }
})
const posted = {
  type: 'identify',
  userId: 'u-42',
  anonymousId: 'anon-7f3a',
  messageId: 'm-identify-1',
  timestamp: T0,
  traits: { email: 'ada@example.com', name: 'Ada Lovelace', plan: 'free' },
  context
}

describe('segment-timeline.identify', () => {
  itDeliversLikeEveryAction('identify', event, posted)

})
