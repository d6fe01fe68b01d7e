import nock from 'nock'
import { createTestEvent, createTestIntegration } from '@segment/actions-core'
import Destination from '../../index'
import { T0, context, settings } from '../../__tests__/__helpers__/events'
import { itDeliversLikeEveryAction } from '../../__tests__/__helpers__/delivery'

const testDestination = createTestIntegration(Destination)

beforeEach(() => nock.cleanAll())
afterEach(() => expect(nock.isDone()).toBe(true))

// The event as Segment delivers it to the group action, and the Segment event we post for it.
const event = createTestEvent({
  type: 'group',
  userId: 'u-42',
  anonymousId: 'anon-7f3a',
  messageId: 'm-group-1',
  timestamp: T0,
  context,
  groupId: 'acme-1',
  traits: { name: 'Acme Inc', plan: 'enterprise', employees: 120 }
})
const posted = {
  type: 'group',
  userId: 'u-42',
  anonymousId: 'anon-7f3a',
  messageId: 'm-group-1',
  timestamp: T0,
  traits: { name: 'Acme Inc', plan: 'enterprise', employees: 120 },
  groupId: 'acme-1',
  context
}

describe('segment-timeline.group', () => {
  itDeliversLikeEveryAction('group', event, posted)

  it('needs a group id before anything is sent', async () => {
    await expect(
      testDestination.testAction('group', { event: { ...event, groupId: undefined }, settings, useDefaultMappings: true })
    ).rejects.toThrow("missing the required field 'groupId'")
  })
})
