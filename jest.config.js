// Two projects: fast unit tests, and integration tests against a real RabbitMQ broker
// (one broker per run, started by integration/global-setup.ts).
const tsJest = ['ts-jest', { tsconfig: 'tsconfig.test.json' }];
module.exports = {
  projects: [
    {
      displayName: 'unit',
      testEnvironment: 'node',
      roots: ['<rootDir>/test'],
      testMatch: ['**/*.test.ts'],
      transform: { '^.+\\.ts$': tsJest },
    },
    {
      displayName: 'integration',
      testEnvironment: 'node',
      roots: ['<rootDir>/integration'],
      testMatch: ['**/*.test.ts'],
      transform: { '^.+\\.ts$': tsJest },
      globalSetup: '<rootDir>/integration/global-setup.ts',
      globalTeardown: '<rootDir>/integration/global-teardown.ts',
      setupFilesAfterEnv: ['<rootDir>/integration/jest-setup.ts'],
    },
  ],
};
