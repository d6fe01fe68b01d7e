import {
  IntegrationError,
  MultiStatusResponse,
  RequestTimeoutError,
  RetryableError,
  getErrorCodeFromHttpStatus
} from '@segment/actions-core'
import type { JSONLikeObject, ModifiedResponse, RequestClient } from '@segment/actions-core'
import type { Settings } from './generated-types'

/**
 * How the actions talk to segment-timeline's ingest API (docs/ingest.md): one event to
 * `POST /v1/segment`, a batch to `POST /v1/batch`, a GDPR delete as a `delete` event. The
 * API is the one home of the Segment Spec's rules: this file reshapes a mapped payload into
 * the Segment event it came from and turns the API's answers into Segment's results.
 */

/**
 * The production API. A placeholder on a reserved domain (RFC 2606) until the platform has
 * its public host: a team that leaves the setting empty gets a clear connection error,
 * never its key sent to a stranger's server.
 */
export const DEFAULT_ENDPOINT = 'https://api.segment-timeline.example'

/** Our request limit (SPEC §2): 500 KiB, and 2,500 events. */
export const MAX_REQUEST_BYTES = 500 * 1024
export const MAX_REQUEST_EVENTS = 2500

/**
 * What Segment retries on the Actions path (SPEC §12): 408, 423, 429 and 5xx but 501.
 * Every other refusal is final: the event is wrong and sending it again fails again.
 */
export function isRetryable(status: number): boolean {
  return status === 408 || status === 423 || status === 429 || (status >= 500 && status !== 501)
}

export type SegmentType = 'track' | 'page' | 'screen' | 'identify' | 'group' | 'alias' | 'delete'

/** The keys of a Segment event that the actions' fields carry, in the Spec's order. */
const EVENT_KEYS = [
  'userId',
  'anonymousId',
  'messageId',
  'timestamp',
  'event',
  'name',
  'properties',
  'traits',
  'groupId',
  'previousId',
  'context'
] as const

type EventFields = Partial<Record<(typeof EVENT_KEYS)[number], unknown>>

/** Our answer to a batch (docs/ingest.md "Answers"): every index not in `rejected` is stored. */
interface BatchAnswer {
  success?: boolean
  accepted?: number
  duplicates?: number
  rejected?: Rejection[]
}

interface Rejection {
  index: number
  messageId?: string | null
  errors?: FieldErrors
  status?: number
  message?: string
}

type FieldErrors = Record<string, unknown>

/** Our one error envelope (app/errors.py). */
interface ErrorEnvelope {
  message?: string
  code?: string
  errors?: FieldErrors
}

/** The endpoint setting without its trailing slashes, or the production API. */
export function baseUrl(settings: Settings): string {
  return (settings.endpoint || DEFAULT_ENDPOINT).replace(/\/+$/, '')
}

/** The Segment event a mapped payload stands for: its type and the event keys set, nothing else. */
export function segmentEvent(type: SegmentType, payload: EventFields): JSONLikeObject {
  const event: JSONLikeObject = { type }
  for (const key of EVENT_KEYS) {
    const value = payload[key]
    if (value !== undefined && value !== null) {
      event[key] = value as JSONLikeObject[string]
    }
  }
  return event
}

/** One event to `POST /v1/segment`; a refusal throws with our message and status. */
export async function sendEvent(
  request: RequestClient,
  settings: Settings,
  type: SegmentType,
  payload: EventFields
): Promise<ModifiedResponse> {
  const response = await request(`${baseUrl(settings)}/v1/segment`, {
    method: 'post',
    json: segmentEvent(type, payload),
    throwHttpErrors: false
  })
  if (!response.ok) {
    throw refusal(response)
  }
  return response
}

/** The error Segment shows for a refused request: our message, retried only when it may pass later. */
export function refusal(response: ModifiedResponse): Error {
  const answer = envelopeOf(response)
  const message = answer.message ?? `segment-timeline answered ${response.status} ${response.statusText}`
  if (isRetryable(response.status)) {
    return new RetryableError(message, response.status as ConstructorParameters<typeof RetryableError>[1])
  }
  return new IntegrationError(message, answer.code ?? getErrorCodeFromHttpStatus(response.status), response.status)
}

/**
 * A batch of one action's payloads to `POST /v1/batch`, with a result for each event.
 *
 * Segment's batch (up to 1,000 events, cut at `batch_bytes`) goes as one request; only a
 * batch over our request limit is split, so that it is never refused whole. Each event
 * gets its own result: stored (2xx), refused by us (its 4xx, never retried), or the whole
 * request's 429/5xx (retried). One refused event never fails or re-sends the others.
 */
export async function sendBatch(
  request: RequestClient,
  settings: Settings,
  type: SegmentType,
  payloads: EventFields[]
): Promise<MultiStatusResponse> {
  const results = new MultiStatusResponse()
  const events = payloads.map((payload) => segmentEvent(type, payload))
  let offset = 0
  for (const chunk of requestChunks(events)) {
    await sendChunk(request, `${baseUrl(settings)}/v1/batch`, chunk, offset, results)
    offset += chunk.length
  }
  return results
}

/** The events cut into requests under our limits, in order (almost always one request). */
export function requestChunks(events: JSONLikeObject[]): JSONLikeObject[][] {
  const envelope = Buffer.byteLength('{"batch":[]}')
  const chunks: JSONLikeObject[][] = []
  let current: JSONLikeObject[] = []
  let size = envelope
  for (const event of events) {
    const bytes = Buffer.byteLength(JSON.stringify(event)) + 1
    if (current.length > 0 && (size + bytes > MAX_REQUEST_BYTES || current.length >= MAX_REQUEST_EVENTS)) {
      chunks.push(current)
      current = []
      size = envelope
    }
    current.push(event)
    size += bytes
  }
  if (current.length > 0) {
    chunks.push(current)
  }
  return chunks
}

async function sendChunk(
  request: RequestClient,
  url: string,
  chunk: JSONLikeObject[],
  offset: number,
  results: MultiStatusResponse
): Promise<void> {
  let response: ModifiedResponse
  try {
    response = await request(url, { method: 'post', json: { batch: chunk }, throwHttpErrors: false })
  } catch (error) {
    // No answer (a timeout, a refused connection): nothing is known stored, so each event
    // is retried; a re-sent event that did land is stored once (its messageId).
    const status = error instanceof RequestTimeoutError ? 408 : 503
    const errormessage = `segment-timeline did not answer: ${(error as Error).message}`
    chunk.forEach((event, index) => results.setErrorResponseAtIndex(offset + index, { status, errormessage, sent: event }))
    return
  }
  if (response.ok) {
    const answer = (isObject(response.data) ? response.data : {}) as BatchAnswer
    const rejected = new Map((answer.rejected ?? []).map((rejection) => [rejection.index, rejection]))
    chunk.forEach((event, index) => {
      const rejection = rejected.get(index)
      if (rejection) {
        results.setErrorResponseAtIndex(offset + index, {
          status: rejection.status ?? 400,
          errormessage: rejection.message ?? describeErrors(rejection.errors) ?? 'segment-timeline refused the event',
          sent: event,
          body: rejection as unknown as JSONLikeObject
        })
      } else {
        results.setSuccessResponseAtIndex(offset + index, { status: response.status, sent: event, body: 'stored' })
      }
    })
    return
  }
  // The whole request refused. A 400 `invalid_batch` means every event was invalid and
  // lists each one's errors by index; any other answer is each event's answer.
  const answer = envelopeOf(response)
  const general = answer.message ?? `segment-timeline answered ${response.status} ${response.statusText}`
  chunk.forEach((event, index) => {
    const own = response.status === 400 ? describeErrors(answer.errors?.[String(index)]) : undefined
    results.setErrorResponseAtIndex(offset + index, {
      status: response.status,
      errormessage: own ?? general,
      sent: event,
      body: answer as JSONLikeObject
    })
  })
}

function envelopeOf(response: ModifiedResponse): ErrorEnvelope {
  const data: unknown = response.data
  return (isObject(data) ? data : {}) as ErrorEnvelope
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** `{"event": ["Missing data..."]}` as one line: `event: Missing data...` (`_event` is the whole event). */
export function describeErrors(errors: unknown): string | undefined {
  if (!isObject(errors)) {
    return undefined
  }
  const parts = Object.entries(errors).map(([field, messages]) => {
    const text = Array.isArray(messages) ? messages.map(String).join(' ') : String(messages)
    return field === '_event' ? text : `${field}: ${text}`
  })
  return parts.length > 0 ? parts.join('; ') : undefined
}
