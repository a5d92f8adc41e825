import { defineConfig } from 'vitest/config';
import { workspaceAliases } from './vitest.aliases.js';

// Unit tests import workspace packages from source; e2e tests spawn the built
// binaries (`npm test` runs `tsc -b` first), one forked worker per file so
// independent e2e files run in parallel on the two cores. Vitest's default
// (available cores - 1) is ONE worker on a 2-core machine: every file ran
// after the other (17 min); e2e files mostly wait on their processes.
export default defineConfig({
  resolve: { alias: workspaceAliases },
  test: {
    maxWorkers: 2,
    // The default report for people; a JSON one that .ci/run sums up in a plain closing line.
    reporters: ['default', ['json', { outputFile: 'test-artifacts/vitest.json' }]],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['packages/*/test/**/*.test.ts'],
          testTimeout: 60_000,
          pool: 'forks',
        },
      },
      {
        extends: true,
        test: {
          name: 'e2e',
          include: ['test/**/*.test.ts'],
          testTimeout: 180_000,
          hookTimeout: 60_000,
          pool: 'forks',
          fileParallelism: true,
        },
      },
    ],
  },
});
