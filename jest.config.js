// Unit tests: fast, no broker. Integration tests have their own config
// (jest.integration.config.js) with one real broker per run.
module.exports = {
  displayName: 'unit',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }] },
  // Stores fsync for real: on a disk shared with a busy broker a few fsyncs
  // can take seconds, and jest's 5 s default failed tests that were only slow.
  testTimeout: 30_000,
};
