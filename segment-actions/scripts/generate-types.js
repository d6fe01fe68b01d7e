#!/usr/bin/env node
/**
 * generated-types.ts for the definition and each action, as Segment's CLI writes them
 * (`./bin/run generate:types` in segmentio/action-destinations, packages/cli: the fields
 * through actions-core's `fieldsToJsonSchema`, titles and enums dropped, compiled by
 * json-schema-to-typescript with their prettier style). Their CLI is not on npm, so this
 * is its few lines again.
 *
 *   npm run generate:types    # builds, then rewrites src/**\/generated-types.ts
 *
 * `typesOf(definition)` is also what src/__tests__/generated-types.test.ts compares the
 * committed files with.
 */
'use strict'

const fs = require('fs')
const path = require('path')
const { fieldsToJsonSchema } = require('@segment/actions-core')
const { compile } = require('json-schema-to-typescript')

const BANNER = '// Generated file. DO NOT MODIFY IT BY HAND.'
// Segment's prettier settings (their root package.json).
const STYLE = { semi: false, singleQuote: true, trailingComma: 'none', printWidth: 120 }

function removeExtra(schema) {
  const copy = { ...schema }
  delete copy.title
  delete copy.enum
  if (copy.type === 'object' && copy.properties) {
    for (const [key, property] of Object.entries(copy.properties)) {
      copy.properties[key] = removeExtra(property)
    }
  } else if (copy.type === 'array' && copy.items) {
    copy.items = removeExtra(copy.items)
  }
  return copy
}

function generateTypes(fields, name) {
  const schema = removeExtra(fieldsToJsonSchema(fields, { tsType: true }))
  return compile(schema, name, { bannerComment: BANNER, style: STYLE })
}

/** `{relative path under src/: text}` for the definition's settings and each action's payload. */
async function typesOf(definition) {
  const files = { 'generated-types.ts': await generateTypes(definition.authentication.fields, 'Settings') }
  for (const [slug, action] of Object.entries(definition.actions)) {
    files[path.join(slug, 'generated-types.ts')] = await generateTypes(action.fields, 'Payload')
  }
  return files
}

module.exports = { typesOf }

if (require.main === module) {
  const definition = require(path.join(__dirname, '..', 'dist', 'index.js')).default
  typesOf(definition).then((files) => {
    for (const [name, text] of Object.entries(files)) {
      fs.writeFileSync(path.join(__dirname, '..', 'src', name), text)
      console.log(`wrote src/${name}`)
    }
  })
}
