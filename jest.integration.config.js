// Integration tests against a real RabbitMQ 3.10.8 broker with Warren: one
// broker per run, started by integration/global-setup.ts; files run in band.
module.exports = {
  displayName: 'integration',
  testEnvironment: 'node',
  roots: ['<rootDir>/integration'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }] },
  globalSetup: '<rootDir>/integration/global-setup.ts',
  globalTeardown: '<rootDir>/integration/global-teardown.ts',
  setupFilesAfterEnv: ['<rootDir>/integration/jest-setup.ts'],
};
