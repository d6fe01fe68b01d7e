import nock from 'nock'
import { createTestEvent } from '@segment/actions-core'
import { T0, context } from '../../__tests__/__helpers__/events'
import { itDeliversLikeEveryAction } from '../../__tests__/__helpers__/delivery'

beforeEach(() => nock.cleanAll())
afterEach(() => expect(nock.isDone()).toBe(true))

// The event as Segment delivers it to the page action, and the Segment event we post for it.
const event = createTestEvent({
  type: 'page',
  userId: 'u-42',
  anonymousId: 'anon-7f3a',
  messageId: 'm-page-1',
  timestamp: T0,
  context,
  name: 'Pricing',
  properties: { plan: 'pro' }
})
const posted = {
  type: 'page',
  userId: 'u-42',
  anonymousId: 'anon-7f3a',
  messageId: 'm-page-1',
  timestamp: T0,
  name: 'Pricing',
  properties: { plan: 'pro' },
  context
}

describe('segment-timeline.page', () => {
  itDeliversLikeEveryAction('page', event, posted)

})
