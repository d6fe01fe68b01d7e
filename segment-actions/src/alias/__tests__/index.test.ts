import nock from 'nock'
import { createTestEvent, createTestIntegration } from '@segment/actions-core'
import Destination from '../../index'
import { T0, context, settings } from '../../__tests__/__helpers__/events'
import { itDeliversLikeEveryAction } from '../../__tests__/__helpers__/delivery'

const testDestination = createTestIntegration(Destination)

beforeEach(() => nock.cleanAll())
afterEach(() => expect(nock.isDone()).toBe(true))

// The event as Segment delivers it to the alias action, and the Segment event we post for it.
const event = createTestEvent({
  type: 'alias',
  userId: 'u-42',
  anonymousId: 'anon-7f3a',
  messageId: 'm-alias-1',
  timestamp: T0,
  context,
  previousId: 'ada-legacy'
})
const posted = {
  type: 'alias',
  userId: 'u-42',
  anonymousId: 'anon-7f3a',
  messageId: 'm-alias-1',
  timestamp: T0,
  previousId: 'ada-legacy',
  context
}

describe('segment-timeline.alias', () => {
  itDeliversLikeEveryAction('alias', event, posted)

  it('needs the previous id before anything is sent', async () => {
    await expect(
      testDestination.testAction('alias', { event: { ...event, previousId: undefined }, settings, useDefaultMappings: true })
    ).rejects.toThrow("missing the required field 'previousId'")
  })
})
