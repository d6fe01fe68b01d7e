import type { ActionDefinition } from '@segment/actions-core'
import type { Settings } from '../generated-types'
import type { Payload } from './generated-types'
import { commonFields, traits } from '../fields'
import { sendBatch, sendEvent } from '../api'

const action: ActionDefinition<Settings, Payload> = {
  title: 'Identify User',
  description:
    "Tell segment-timeline who the customer is and update their profile's traits; a company trait joins that company.",
  defaultSubscription: 'type = "identify"',
  fields: {
    traits,
    ...commonFields
  },
  perform: (request, { settings, payload }) => sendEvent(request, settings, 'identify', payload),
  performBatch: (request, { settings, payload }) => sendBatch(request, settings, 'identify', payload)
}

export default action
