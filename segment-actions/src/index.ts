import { randomUUID } from 'crypto'
import { HTTPError, InvalidAuthenticationError, defaultValues } from '@segment/actions-core'
import type { ModifiedResponse } from '@segment/actions-core'
import type { DestinationDefinition, Preset } from '@segment/actions-core'
import type { Settings } from './generated-types'
import { DEFAULT_ENDPOINT, baseUrl, refusal, sendEvent } from './api'
import track from './track'
import page from './page'
import screen from './screen'
import identify from './identify'
import group from './group'
import alias from './alias'

/** segment-timeline's Actions destination: the definition Segment's runtime runs (SPEC §12). */

const presets: Preset[] = [
  {
    name: 'Track Calls',
    subscribe: 'type = "track"',
    partnerAction: 'track',
    mapping: defaultValues(track.fields),
    type: 'automatic'
  },
  {
    name: 'Page Calls',
    subscribe: 'type = "page"',
    partnerAction: 'page',
    mapping: defaultValues(page.fields),
    type: 'automatic'
  },
  {
    name: 'Screen Calls',
    subscribe: 'type = "screen"',
    partnerAction: 'screen',
    mapping: defaultValues(screen.fields),
    type: 'automatic'
  },
  {
    name: 'Identify Calls',
    subscribe: 'type = "identify"',
    partnerAction: 'identify',
    mapping: defaultValues(identify.fields),
    type: 'automatic'
  },
  {
    name: 'Group Calls',
    subscribe: 'type = "group"',
    partnerAction: 'group',
    mapping: defaultValues(group.fields),
    type: 'automatic'
  },
  {
    name: 'Alias Calls',
    subscribe: 'type = "alias"',
    partnerAction: 'alias',
    mapping: defaultValues(alias.fields),
    type: 'automatic'
  }
]

interface Me {
  team?: { id?: string; name?: string }
  key?: { name?: string; scopes?: string[]; status?: string }
}

const destination: DestinationDefinition<Settings> = {
  name: 'segment-timeline (Actions)',
  slug: 'actions-segment-timeline',
  mode: 'cloud',
  description:
    "Send every page, screen, event, trait change and company of a customer to segment-timeline, which keeps one timeline per customer for the support agents who answer them.",
  authentication: {
    scheme: 'custom',
    fields: {
      apiKey: {
        label: 'API Key',
        description: "A segment-timeline API key with the ingest scope, made by an admin of your team (it starts with tlk_).",
        type: 'password',
        required: true
      },
      endpoint: {
        label: 'Endpoint',
        description: `The base URL of your segment-timeline API. Leave it as ${DEFAULT_ENDPOINT} unless your team runs its own.`,
        type: 'string',
        format: 'uri',
        default: DEFAULT_ENDPOINT
      }
    },
    // GET /api/v1/me names the key and its team. Any usable key answers it, so the scopes
    // are checked too: a read-only key would pass here and then lose every event to 403.
    testAuthentication: async (request, { settings }) => {
      let response
      try {
        response = await request<Me>(`${baseUrl(settings)}/api/v1/me`, { method: 'get' })
      } catch (error) {
        if (error instanceof HTTPError) {
          error.message = refusal(error.response as ModifiedResponse).message
        }
        throw error
      }
      const scopes = response.data?.key?.scopes ?? []
      if (!scopes.includes('ingest')) {
        throw new InvalidAuthenticationError(
          `The key "${response.data?.key?.name ?? ''}" cannot send events: it lacks the ingest scope. Paste a key made with the ingest scope.`
        )
      }
      return response
    }
  },
  extendRequest: ({ settings }) => ({
    // Segment's way, which our ingest reads: Basic base64(KEY:).
    username: settings.apiKey,
    password: ''
  }),
  // A user deletion regulation: our `delete` erases the person (docs/fold.md "Delete"). Our
  // server places it at its receipt; its own messageId, so that a second deletion of the
  // same person is never taken for a re-send of the first.
  onDelete: (request, { settings, payload }) =>
    sendEvent(request, settings, 'delete', {
      userId: payload.userId,
      messageId: `actions-delete-${randomUUID()}`
    }),
  presets,
  actions: {
    track,
    page,
    screen,
    identify,
    group,
    alias
  }
}

export default destination
