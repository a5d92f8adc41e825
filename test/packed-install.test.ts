import { afterAll, describe, expect, it } from 'vitest';
import { readdirSync, realpathSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from './harness/procs.js';
import { runClean } from './harness/clean-run.js';

// Both commands install without the monorepo: `npm pack` of the four
// workspaces, then the README's global install of those tarballs into an
// empty prefix (--prefix stands in for the global one), run from outside the
// checkout. The tarballs carry dist/ and bin/ (package.json `files`), so this
// fails if a file a command needs is left out, or if a command still reaches
// into the checkout.

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WORKSPACES = ['protocol', 'host', 'connector', 'relay'];

const run = runClean;

describe('a packed install, without the monorepo', () => {
  const tmp = tempDir('tunnel-packed-');
  afterAll(() => tmp.cleanup());

  it('npm pack + npm install -g of the tarballs gives working `tunnel` and `tunnel-relay`', { timeout: 420_000 }, async () => {
    const packed = await run('npm', ['pack', '--silent', '--pack-destination', tmp.dir, ...WORKSPACES.flatMap((w) => ['-w', `packages/${w}`])], root, 120_000);
    expect(packed.code, packed.stderr).toBe(0);
    const tarballs = readdirSync(tmp.dir).filter((f) => f.endsWith('.tgz')).sort();
    expect(tarballs).toEqual(WORKSPACES.map((w) => `tunnel-${w}-0.1.0.tgz`).sort());

    // Installed from an empty directory outside the checkout, as the README says.
    const prefix = path.join(tmp.dir, 'prefix');
    const install = await run('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', ...tarballs.map((t) => `./${t}`)], tmp.dir, 360_000);
    expect(install.code, install.stderr.slice(-2000)).toBe(0);

    for (const [bin, pkg] of [['tunnel', 'connector'], ['tunnel-relay', 'relay']] as const) {
      const exe = path.join(prefix, 'bin', bin);
      // A copy in the prefix, not a link back into this checkout.
      expect(realpathSync(exe).startsWith(path.join(prefix, 'lib', 'node_modules', '@tunnel', pkg) + path.sep), realpathSync(exe)).toBe(true);
      const version = await run(exe, ['version'], tmp.dir, 60_000);
      expect(version.code, version.stderr).toBe(0);
      expect(version.stdout).toBe('0.1.0\n');
      const help = await run(exe, ['--help'], tmp.dir, 60_000);
      expect(help.code, help.stderr).toBe(0);
      expect(help.stdout).toContain(`Usage: ${bin}`);
    }
    // The relay's heavier paths load from the tarballs too (store, keys): make a fleet key.
    const keys = await run(path.join(prefix, 'bin', 'tunnel-relay'), ['keys', 'generate', '--out', path.join(tmp.dir, 'fleet-key.json')], tmp.dir, 60_000);
    expect(keys.code, keys.stderr).toBe(0);
    expect(keys.stdout).toMatch(/^wrote .*fleet-key\.json \(mode 0600\)\npublic key: [A-Za-z0-9_-]{43}\n$/);
  });
});
