import type { ActionDefinition } from '@segment/actions-core'
import type { Settings } from '../generated-types'
import type { Payload } from './generated-types'
import { commonFields, properties } from '../fields'
import { sendBatch, sendEvent } from '../api'

const action: ActionDefinition<Settings, Payload> = {
  title: 'Screen View',
  description: 'Add a mobile app screen the customer viewed to their timeline.',
  defaultSubscription: 'type = "screen"',
  fields: {
    name: {
      label: 'Screen Name',
      description: 'The name of the screen ("Viewed screen NAME" in the timeline).',
      type: 'string',
      default: { '@path': '$.name' }
    },
    properties,
    ...commonFields
  },
  perform: (request, { settings, payload }) => sendEvent(request, settings, 'screen', payload),
  performBatch: (request, { settings, payload }) => sendBatch(request, settings, 'screen', payload)
}

export default action
