#!/usr/bin/env node
/**
 * Runs a destination definition with Segment's runtime (@segment/actions-core's
 * `Destination`), for the live tests (tests/segment_actions/): ours as built (dist/index.js,
 * with the presets a team gets on connecting), or Segment's own Webhook destination.
 *
 * Reads one JSON command on stdin and writes one JSON answer on stdout:
 *
 *   {"destination": "timeline", "call": "onEvent" | "onBatch" | "onDelete" | "testAuthentication",
 *    "settings": {"apiKey": ..., "endpoint": ...}, "event": {...} | "events": [...],
 *    "actions": ["track"]}                      // optional: only these presets' subscriptions
 *   {"destination": "webhook", "call": "onEvent" | "onBatch", "url": ..., "apiKey": ..., ...}
 *
 *   -> {"ok": true, "results": [...]} or {"ok": false, "error": {"message", "status", "name"}}
 */
'use strict'

const path = require('path')
const { Destination } = require('@segment/actions-core')

function readStdin() {
  return new Promise((resolve, reject) => {
    let text = ''
    process.stdin.setEncoding('utf8')
    process.stdin.on('data', (chunk) => (text += chunk))
    process.stdin.on('end', () => resolve(text))
    process.stdin.on('error', reject)
  })
}

/** Our definition, as `npm run build` wrote it, subscribed by its presets. */
function timeline(command) {
  const definition = require(path.join(__dirname, '..', 'dist', 'index.js')).default
  const presets = definition.presets.filter((preset) => !command.actions || command.actions.includes(preset.partnerAction))
  const subscriptions = presets.map((preset) => ({
    name: preset.name,
    subscribe: preset.subscribe,
    partnerAction: preset.partnerAction,
    mapping: preset.mapping
  }))
  return { destination: new Destination(definition), settings: { ...command.settings, subscriptions } }
}

/**
 * Segment's Webhook (Actions) destination, set up as a team would point it at us: the
 * destination URL, our key as Basic credentials in its headers, and batching on or off.
 */
function webhook(command) {
  const definition = require('@segment/action-destinations/dist/destinations/webhook').default
  const basic = Buffer.from(`${command.apiKey}:`).toString('base64')
  const mapping = {
    url: command.url,
    method: 'POST',
    headers: { Authorization: `Basic ${basic}` },
    data: { '@path': '$.' }
  }
  if (command.batchSize) {
    mapping.batch_size = command.batchSize
    mapping.enable_batching = true
  }
  const subscriptions = [{ subscribe: 'type = "track" or type = "identify" or type = "page" or type = "screen" or type = "group" or type = "alias"', partnerAction: 'send', mapping }]
  return { destination: new Destination(definition), settings: { subscriptions } }
}

async function run(command) {
  const { destination, settings } = (command.destination === 'webhook' ? webhook : timeline)(command)
  switch (command.call) {
    case 'onEvent':
      return destination.onEvent(command.event, settings)
    case 'onBatch':
      return destination.onBatch(command.events, settings)
    case 'onDelete':
      return destination.onDelete(command.event, settings)
    case 'testAuthentication':
      return destination.testAuthentication(command.settings)
    default:
      throw new Error(`unknown call ${command.call}`)
  }
}

readStdin()
  .then((text) => run(JSON.parse(text)))
  .then((results) => process.stdout.write(JSON.stringify({ ok: true, results: results ?? null }) + '\n'))
  .catch((error) => {
    const status = error.status ?? error.response?.status ?? null
    process.stdout.write(JSON.stringify({ ok: false, error: { message: error.message, status, name: error.name, code: error.code ?? null } }) + '\n')
  })
