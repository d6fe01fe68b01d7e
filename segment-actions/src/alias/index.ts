import type { ActionDefinition } from '@segment/actions-core'
import type { Settings } from '../generated-types'
import type { Payload } from './generated-types'
import { commonFields, userId } from '../fields'
import { sendBatch, sendEvent } from '../api'

const action: ActionDefinition<Settings, Payload> = {
  title: 'Alias User',
  description: "Join another id of the customer, and that id's history, to the customer's timeline.",
  defaultSubscription: 'type = "alias"',
  fields: {
    previousId: {
      label: 'Previous ID',
      description: "The customer's other id: an earlier userId or an anonymousId.",
      type: 'string',
      required: true,
      default: { '@path': '$.previousId' }
    },
    ...commonFields,
    userId: {
      ...userId,
      description: 'The id the previous id joins.',
      required: true
    }
  },
  perform: (request, { settings, payload }) => sendEvent(request, settings, 'alias', payload),
  performBatch: (request, { settings, payload }) => sendBatch(request, settings, 'alias', payload)
}

export default action
