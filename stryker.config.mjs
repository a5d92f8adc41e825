// @ts-check
// Mutation testing of the unit-testable core: `npm run test:mutation`
// (not part of `npm test`: it runs the unit suites once per mutant).
// Incremental: results are kept in reports/mutation/incremental.json, so a
// rerun tests only mutants in code or tests that changed. Narrow a run with
// `npm run test:mutation -- --mutate packages/protocol/src/frame.ts`.
// Scores and the surviving mutants judged equivalent: docs/mutation.md.
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  packageManager: 'npm',
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.mutation.config.ts' },
  checkers: ['typescript'],
  tsconfigFile: 'tsconfig.json',
  typescriptChecker: { prioritizePerformanceOverAccuracy: true },
  mutate: [
    'packages/protocol/src/frame.ts',
    'packages/protocol/src/heads.ts',
    'packages/protocol/src/head-stream.ts',
    'packages/protocol/src/stream.ts',
    'packages/protocol/src/session.ts',
    'packages/protocol/src/token.ts',
    'packages/protocol/src/control.ts',
    'packages/relay/src/edge/route-table.ts',
    'packages/relay/src/connectors/tunnel-connections.ts',
    'packages/relay/src/fleet/peer-auth.ts',
    'packages/connector/src/ingress/ingress.ts',
    'packages/connector/src/ingress/config.ts',
    'packages/protocol/src/duration.ts',
  ],
  coverageAnalysis: 'perTest',
  ignoreStatic: true,
  incremental: true,
  incrementalFile: 'reports/mutation/incremental.json',
  // Bounded: one worker (the machine is shared), a per-mutant timeout.
  concurrency: 1,
  timeoutMS: 15_000,
  timeoutFactor: 2,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/index.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};
