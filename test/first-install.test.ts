import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from './harness/procs.js';
import { runClean } from './harness/clean-run.js';

// The newcomer's promise: on a fresh clone, ONE `npm install` makes
// `npx tunnel` and `npx tunnel-relay` work. It broke silently before (bins
// pointed at dist/, which `prepare` builds only after npm links bins), so this
// clones the committed tree — uncommitted edits are not in the clone — and
// installs it for real.

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const run = runClean;

describe('first install on a fresh clone', () => {
  const tmp = tempDir('tunnel-fresh-clone-');
  afterAll(() => tmp.cleanup());

  it('one `npm install` links working `npx tunnel` and `npx tunnel-relay`', { timeout: 420_000 }, async () => {
    const clone = path.join(tmp.dir, 'c');
    const cloned = await run('git', ['clone', '--quiet', '--no-hardlinks', root, clone], tmp.dir, 60_000);
    expect(cloned.code, cloned.stderr).toBe(0);

    // Each bin is a committed file, so it exists when npm links bins (before `prepare`),
    // so check them in the clone as committed, before anything is built.
    for (const pkg of ['connector', 'relay']) {
      const manifest = JSON.parse(readFileSync(path.join(clone, 'packages', pkg, 'package.json'), 'utf8')) as { bin: Record<string, string> };
      for (const file of Object.values(manifest.bin)) {
        expect(existsSync(path.join(clone, 'packages', pkg, file)), `${pkg} bin ${file} is in the clone`).toBe(true);
      }
    }

    const install = await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline'], clone, 360_000);
    expect(install.code, install.stderr.slice(-2000)).toBe(0);

    const version = await run('npx', ['--no-install', 'tunnel', '--version'], clone, 60_000);
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);

    const relayHelp = await run('npx', ['--no-install', 'tunnel-relay', '--help'], clone, 60_000);
    expect(relayHelp.code, relayHelp.stderr).toBe(0);
    expect(relayHelp.stdout).toMatch(/Usage: tunnel-relay/);
    expect(relayHelp.stdout).toMatch(/serve/);
  });
});
