/** Jest as Segment's action-destinations runs it: ts-jest, node, never the built dist/. */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/src'],
  modulePathIgnorePatterns: ['<rootDir>/dist/'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/', '__tests__/__helpers__/'],
  transform: { '^.+\\.ts$': ['ts-jest', { isolatedModules: true }] }
}
