// Prints the plain closing lines CI reads from the JSON report `npm test`
// writes: "N passed, N failed, N skipped", then one line per test file that
// failed as a whole (it threw at import, a hook failed, it timed out) and
// per failed test. A file that fails to load has no tests, so counting tests
// alone would print "0 failed" beside a red exit.
// Exit status: 1 when the report shows any failure, so the summary cannot
// disagree with the run.
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
let r;
try {
  r = JSON.parse(readFileSync(new URL('../test-artifacts/vitest.json', import.meta.url), 'utf8'));
} catch (e) {
  console.log(`no test report: ${e.message}`);
  process.exit(1);
}
const firstLine = (s) => String(s ?? '').split('\n').find((l) => l.trim()) ?? '';
const files = r.testResults ?? [];
const failedFiles = files.filter((f) => f.status === 'failed');
// A file that failed outside its tests: nothing inside it failed, or it has a message of its own.
const brokenFiles = failedFiles.filter((f) => (f.assertionResults ?? []).every((a) => a.status !== 'failed') || f.message);
const failedTests = files.flatMap((f) => (f.assertionResults ?? []).filter((a) => a.status === 'failed').map((a) => ({ file: f.name, name: a.fullName ?? a.title, msg: (a.failureMessages ?? [])[0] })));
const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
// numTotalTestSuites counts describe blocks too, not files: count files from the list.
const failedSuites = r.numFailedTestSuites ?? failedFiles.length;
// The plain closing line alone (CI reads 'N passed, N failed, N skipped' on a line of its own), then the files.
console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
console.log(`test files: ${failedFiles.length} of ${files.length} failed${brokenFiles.length ? ` (${brokenFiles.length} outside their tests)` : ''}`);
for (const f of brokenFiles) console.log(`FAILED FILE ${relative(root, f.name)}: ${firstLine(f.message) || 'failed outside its tests (see the log above)'}`);
for (const t of failedTests) console.log(`FAILED ${relative(root, t.file)} > ${t.name}: ${firstLine(t.msg)}`);
const failed = r.success === false || failedSuites > 0 || (r.numFailedTests ?? 0) > 0 || (r.numRuntimeErrorTestSuites ?? 0) > 0;
process.exit(failed ? 1 : 0);
