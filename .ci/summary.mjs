// Prints the plain closing line CI reads ("N passed, N failed, N skipped")
// from the JSON report `npm test` writes.
import { readFileSync } from 'node:fs';
try {
  const r = JSON.parse(readFileSync(new URL('../test-artifacts/vitest.json', import.meta.url), 'utf8'));
  const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
} catch (e) {
  console.log(`no test report: ${e.message}`);
}
