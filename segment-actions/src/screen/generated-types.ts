// Generated file. DO NOT MODIFY IT BY HAND.

export interface Payload {
  /**
   * The name of the screen ("Viewed screen NAME" in the timeline).
   */
  name?: string
  /**
   * The properties of the event, shown with it in the timeline.
   */
  properties?: {
    [k: string]: unknown
  }
  /**
   * The unique identifier of the user. An event needs a User ID or an Anonymous ID.
   */
  userId?: string
  /**
   * The identifier of an anonymous visitor. When an event carries both ids, the anonymous history joins the known customer.
   */
  anonymousId?: string
  /**
   * When the event happened. The timeline is ordered by this time, not by arrival.
   */
  timestamp?: string | number
  /**
   * The unique id of the event. The same message sent twice (same id and type) is stored and shown once.
   */
  messageId?: string
  /**
   * The event context as Segment sends it. The timeline shows page (url, title, path, referrer), userAgent, ip and library; campaign and traits are kept with the event, and context traits update the profile.
   */
  context?: {
    [k: string]: unknown
  }
  /**
   * When enabled, Segment sends events in batches of up to 1,000, one request each; segment-timeline answers for each event.
   */
  enable_batching?: boolean
  /**
   * The largest number of events Segment sends in one batch.
   */
  batch_size?: number
  /**
   * The largest size in bytes of a batch Segment sends in one request (segment-timeline accepts 500 KiB).
   */
  batch_bytes?: number
}
