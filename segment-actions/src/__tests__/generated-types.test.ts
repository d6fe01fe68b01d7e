import fs from 'fs'
import path from 'path'
import Definition from '../index'

// The generator Segment's CLI would run (scripts/generate-types.js), plain CommonJS.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { typesOf } = require('../../scripts/generate-types') as {
  typesOf: (definition: typeof Definition) => Promise<Record<string, string>>
}

describe('generated-types.ts', () => {
  it("are what Segment's CLI writes for the current fields (npm run generate:types)", async () => {
    const files = await typesOf(Definition)

    expect(Object.keys(files).sort()).toEqual(
      ['generated-types.ts', ...Object.keys(Definition.actions).map((slug) => path.join(slug, 'generated-types.ts'))].sort()
    )
    for (const [name, text] of Object.entries(files)) {
      expect([name, fs.readFileSync(path.join(__dirname, '..', name), 'utf8')]).toEqual([name, text])
    }
  })
})
