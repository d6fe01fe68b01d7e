import type { InputField } from '@segment/actions-core'

/**
 * The fields every action shares: who the event is about, when it happened, its id (our
 * dedupe key with its type), its context, and how Segment batches it. They carry what the
 * timeline uses, so a customer's timeline is the same whether the events came through this
 * destination, the classic destination URL or an SDK posting to us directly.
 */

export const userId: InputField = {
  label: 'User ID',
  description: 'The unique identifier of the user. An event needs a User ID or an Anonymous ID.',
  type: 'string',
  default: { '@path': '$.userId' }
}

export const anonymousId: InputField = {
  label: 'Anonymous ID',
  description:
    'The identifier of an anonymous visitor. When an event carries both ids, the anonymous history joins the known customer.',
  type: 'string',
  default: { '@path': '$.anonymousId' }
}

export const timestamp: InputField = {
  label: 'Timestamp',
  description: 'When the event happened. The timeline is ordered by this time, not by arrival.',
  type: 'datetime',
  default: { '@path': '$.timestamp' }
}

export const messageId: InputField = {
  label: 'Message ID',
  description:
    'The unique id of the event. The same message sent twice (same id and type) is stored and shown once.',
  type: 'string',
  default: { '@path': '$.messageId' }
}

export const context: InputField = {
  label: 'Context',
  description:
    'The event context as Segment sends it. The timeline shows page (url, title, path, referrer), userAgent, ip and library; campaign and traits are kept with the event, and context traits update the profile.',
  type: 'object',
  default: { '@path': '$.context' }
}

export const properties: InputField = {
  label: 'Properties',
  description: 'The properties of the event, shown with it in the timeline.',
  type: 'object',
  default: { '@path': '$.properties' }
}

export const traits: InputField = {
  label: 'Traits',
  description: 'Traits to merge into the profile; for each trait the value from the latest event wins.',
  type: 'object',
  default: { '@path': '$.traits' }
}

export const enable_batching: InputField = {
  label: 'Batch Data to segment-timeline',
  description:
    'When enabled, Segment sends events in batches of up to 1,000, one request each; segment-timeline answers for each event.',
  type: 'boolean',
  default: true
}

/** At most this many events per batch (what Segment's batching allows; we accept 2,500). */
export const MAX_BATCH_SIZE = 1000

export const batch_size: InputField = {
  label: 'Batch Size',
  description: 'The largest number of events Segment sends in one batch.',
  type: 'number',
  default: MAX_BATCH_SIZE,
  minimum: 1,
  maximum: MAX_BATCH_SIZE,
  unsafe_hidden: true
}

/**
 * Under our 500 KiB request limit with room for the envelope: Segment cuts a batch by its
 * payloads' bytes, and `sendBatch` still splits a larger one (see api.ts).
 */
export const MAX_BATCH_BYTES = 450_000

export const batch_bytes: InputField = {
  label: 'Batch Bytes',
  description: 'The largest size in bytes of a batch Segment sends in one request (segment-timeline accepts 500 KiB).',
  type: 'number',
  default: MAX_BATCH_BYTES,
  unsafe_hidden: true
}

/** What every action ends with: the ids, time, message id, context and batching. */
export const commonFields: Record<string, InputField> = {
  userId,
  anonymousId,
  timestamp,
  messageId,
  context,
  enable_batching,
  batch_size,
  batch_bytes
}
