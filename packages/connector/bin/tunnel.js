#!/usr/bin/env node
// The `tunnel` command. A committed shim rather than pointing `bin` at
// dist/cli/cli.js: npm links bins before `prepare` builds dist/, and skips a bin
// whose file is missing, so a fresh clone's first `npm install` would leave
// `npx tunnel` unlinked (or resolving to an unrelated registry package).
import '../dist/cli/cli.js';
