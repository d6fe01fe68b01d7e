import type { ActionDefinition } from '@segment/actions-core'
import type { Settings } from '../generated-types'
import type { Payload } from './generated-types'
import { commonFields, properties } from '../fields'
import { sendBatch, sendEvent } from '../api'

const action: ActionDefinition<Settings, Payload> = {
  title: 'Track Event',
  description: 'Add what the customer did to their timeline, named as the Track call names it.',
  defaultSubscription: 'type = "track"',
  fields: {
    event: {
      label: 'Event Name',
      description: 'The name of the action the customer performed, shown as the timeline entry.',
      type: 'string',
      required: true,
      default: { '@path': '$.event' }
    },
    properties,
    ...commonFields
  },
  perform: (request, { settings, payload }) => sendEvent(request, settings, 'track', payload),
  performBatch: (request, { settings, payload }) => sendBatch(request, settings, 'track', payload)
}

export default action
