import { defineConfig } from 'vitest/config';
import { workspaceAliases } from './vitest.aliases.js';

// The unit suites StrykerJS runs against each mutant (`npm run test:mutation`).
// Left out, and why: the 100,000-case fuzzers and the property/scale suites
// take 30-60 s each and would run for every mutant they cover (they stay in
// `npm test`); the yamux-js interop suite tests the other implementation.
export default defineConfig({
  resolve: { alias: workspaceAliases },
  test: {
    include: ['packages/*/test/**/*.test.ts'],
    exclude: [
      'packages/protocol/test/session-fuzz.test.ts',
      'packages/protocol/test/codec-fuzz.test.ts',
      'packages/protocol/test/session-property.test.ts',
      'packages/protocol/test/session-scale.test.ts',
      'packages/protocol/test/interop-yamux-js.test.ts',
      'packages/relay/test/store.test.ts',
      'packages/relay/test/file-store-crash.test.ts',
      'packages/relay/test/redis-store-outage.test.ts',
    ],
    testTimeout: 30_000,
    pool: 'forks',
  },
});
