// Generated file. DO NOT MODIFY IT BY HAND.

export interface Settings {
  /**
   * A segment-timeline API key with the ingest scope, made by an admin of your team (it starts with tlk_).
   */
  apiKey: string
  /**
   * The base URL of your segment-timeline API. Leave it as https://api.segment-timeline.example unless your team runs its own.
   */
  endpoint?: string
}
