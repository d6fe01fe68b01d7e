import type { ActionDefinition } from '@segment/actions-core'
import type { Settings } from '../generated-types'
import type { Payload } from './generated-types'
import { commonFields, properties } from '../fields'
import { sendBatch, sendEvent } from '../api'

const action: ActionDefinition<Settings, Payload> = {
  title: 'Page View',
  description: 'Add a page the customer viewed to their timeline, with where they came from.',
  defaultSubscription: 'type = "page"',
  fields: {
    name: {
      label: 'Page Name',
      description: 'The name of the page ("Viewed page NAME" in the timeline).',
      type: 'string',
      default: { '@path': '$.name' }
    },
    properties,
    ...commonFields
  },
  perform: (request, { settings, payload }) => sendEvent(request, settings, 'page', payload),
  performBatch: (request, { settings, payload }) => sendBatch(request, settings, 'page', payload)
}

export default action
