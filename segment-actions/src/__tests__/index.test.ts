import nock from 'nock'
import { createTestEvent, createTestIntegration } from '@segment/actions-core'
import Definition from '../index'
import { DEFAULT_ENDPOINT } from '../api'
import { ENDPOINT, T0, basicAuth, settings } from './__helpers__/events'

const testDestination = createTestIntegration(Definition)

beforeEach(() => nock.cleanAll())
afterEach(() => expect(nock.isDone()).toBe(true))

const me = (scopes: string[]) => ({
  team: { id: '7', name: 'Acme' },
  key: { id: '12', name: 'Segment production', scopes, status: 'active' }
})

describe('segment-timeline (Actions)', () => {
  describe('testAuthentication', () => {
    it('accepts an ingest key that GET /api/v1/me knows', async () => {
      nock(ENDPOINT, { reqheaders: { authorization: basicAuth } })
        .get('/api/v1/me')
        .reply(200, me(['ingest']))

      await expect(testDestination.testAuthentication(settings)).resolves.not.toThrow()
    })

    it('says "Credentials are invalid" with our reason for a wrong key', async () => {
      nock(ENDPOINT).get('/api/v1/me').reply(401, {
        message: 'The API key is unknown, expired or revoked; copy a current key from your settings.',
        code: 'invalid_key'
      })

      await expect(testDestination.testAuthentication({ ...settings, apiKey: 'tlk_wrong' })).rejects.toThrow(
        'Credentials are invalid: 401 The API key is unknown, expired or revoked; copy a current key from your settings.'
      )
    })

    it('refuses a key that cannot send events', async () => {
      nock(ENDPOINT).get('/api/v1/me').reply(200, me(['read']))

      await expect(testDestination.testAuthentication(settings)).rejects.toThrow(
        /^Credentials are invalid: +The key "Segment production" cannot send events: it lacks the ingest scope\./
      )
    })

    it('calls the production API when the endpoint is left empty, and drops a trailing slash', async () => {
      nock(DEFAULT_ENDPOINT).get('/api/v1/me').reply(200, me(['ingest']))
      await testDestination.testAuthentication({ apiKey: settings.apiKey })

      nock(ENDPOINT).get('/api/v1/me').reply(200, me(['ingest']))
      await testDestination.testAuthentication({ ...settings, endpoint: `${ENDPOINT}/` })
    })
  })

  describe('onDelete', () => {
    it("posts our delete for the person's userId, with a messageId of its own", async () => {
      const bodies: Record<string, unknown>[] = []
      nock(ENDPOINT, { reqheaders: { authorization: basicAuth } })
        .post('/v1/segment', (body) => bodies.push(body) > 0)
        .twice()
        .reply(200, { success: true })

      const event = createTestEvent({ type: 'delete', userId: 'u-42', timestamp: T0 })
      const first = await testDestination.onDelete?.(event, settings)
      await testDestination.onDelete?.(event, settings)

      expect(first).toMatchObject({ status: 200 })
      expect(bodies[0]).toEqual({ type: 'delete', userId: 'u-42', messageId: expect.stringMatching(/^actions-delete-/) })
      // A second deletion of the same person is a new message, never a duplicate of the first.
      expect(bodies[1].messageId).not.toEqual(bodies[0].messageId)
    })

    it('fails with our message when we refuse it', async () => {
      nock(ENDPOINT).post('/v1/segment').reply(400, {
        message: 'delete needs the userId of the person to erase.',
        code: 'invalid_event',
        errors: { userId: ['delete needs the userId of the person to erase.'] }
      })

      const event = createTestEvent({ type: 'delete', userId: undefined, anonymousId: 'anon-1' })
      await expect(testDestination.onDelete?.(event, settings)).rejects.toMatchObject({
        message: 'delete needs the userId of the person to erase.',
        status: 400
      })
    })
  })

  describe('presets', () => {
    it('subscribe each Segment call type to its action, with batching on', () => {
      const presets = (Definition.presets ?? []).map((preset) => ({
        subscribe: 'subscribe' in preset ? preset.subscribe : undefined,
        action: preset.partnerAction,
        batching: preset.mapping?.enable_batching
      }))
      expect(presets).toEqual(
        ['track', 'page', 'screen', 'identify', 'group', 'alias'].map((type) => ({
          subscribe: `type = "${type}"`,
          action: type,
          batching: true
        }))
      )
    })

    it('name every action that has perform and performBatch', () => {
      for (const action of Object.values(Definition.actions)) {
        expect(action.perform).toBeInstanceOf(Function)
        expect(action.performBatch).toBeInstanceOf(Function)
      }
    })
  })
})
