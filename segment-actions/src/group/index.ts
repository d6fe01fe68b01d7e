import type { ActionDefinition } from '@segment/actions-core'
import type { Settings } from '../generated-types'
import type { Payload } from './generated-types'
import { commonFields, traits } from '../fields'
import { sendBatch, sendEvent } from '../api'

const action: ActionDefinition<Settings, Payload> = {
  title: 'Group User',
  description: "Make the customer a member of a company or account, and update the company's traits.",
  defaultSubscription: 'type = "group"',
  fields: {
    groupId: {
      label: 'Group ID',
      description: 'The unique identifier of the company or account.',
      type: 'string',
      required: true,
      default: { '@path': '$.groupId' }
    },
    traits: {
      ...traits,
      description: "The company's traits (name, plan, employees...); for each the value from the latest event wins."
    },
    ...commonFields
  },
  perform: (request, { settings, payload }) => sendEvent(request, settings, 'group', payload),
  performBatch: (request, { settings, payload }) => sendBatch(request, settings, 'group', payload)
}

export default action
