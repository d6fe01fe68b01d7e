import nock from 'nock'
import { createTestEvent } from '@segment/actions-core'
import { T0, context } from '../../__tests__/__helpers__/events'
import { itDeliversLikeEveryAction } from '../../__tests__/__helpers__/delivery'

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
  itDeliversLikeEveryAction('screen', event, posted)

})
