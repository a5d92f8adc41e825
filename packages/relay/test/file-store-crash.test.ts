// Crash safety of the file store with real processes: writers are killed with
// SIGKILL at random moments, then every write they acknowledged must be there
// and the store must load. And: a damaged store refuses to open, naming the file.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileStore, fileNameForKey } from '../src/store/file/file-store.js';
import { openStore } from '../src/store/open.js';
import { StoreError } from '../src/store/types.js';
import { waitFor } from '../../../test/harness/wait.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '..');
const root = path.resolve(pkg, '../..');
const fixture = path.join(here, 'fixtures/crash-writer.mjs');
const distStore = path.join(pkg, 'dist/store');

/** The child imports the compiled store: build it when an output is missing or older than its source. */
function stale(): string[] {
  const srcDir = path.join(pkg, 'src/store');
  return readdirSync(srcDir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .filter((f) => {
      const out = path.join(distStore, f.replace(/\.ts$/, '.js'));
      return !existsSync(out) || statSync(out).mtimeMs < statSync(path.join(srcDir, f)).mtimeMs;
    });
}
function ensureBuilt(): void {
  if (stale().length === 0) return;
  // tsc leaves an output it judges current as it is (a checkout may have
  // only touched the source), so success is its exit status and every output there.
  const r = spawnSync('npx', ['tsc', '-b', 'packages/relay'], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  const missing = stale().filter((f) => !existsSync(path.join(distStore, f.replace(/\.ts$/, '.js'))));
  if (r.status !== 0 || missing.length > 0) throw new Error(`could not build ${missing.join(', ') || 'the relay'} into ${distStore}: ${r.stdout}${r.stderr}`);
}

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(tmpdir(), 'tunnel-crash-'));
  dirs.push(d);
  return d;
}

beforeAll(() => {
  ensureBuilt();
}, 120_000);
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

interface Writer {
  child: ChildProcess;
  lines: string[];
  exited: Promise<void>;
}

function startWriter(dir: string, accountId: string, tag: string): Writer {
  const child = spawn(process.execPath, [fixture, dir, accountId, tag], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let partial = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    const parts = (partial + d).split('\n');
    partial = parts.pop()!; // an unfinished line was not acknowledged
    lines.push(...parts);
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      if (signal !== 'SIGKILL') lines.push(`EXIT ${code} ${signal} ${stderr.trim()}`);
      resolve();
    }),
  );
  return { child, lines, exited };
}

describe('file store crash safety', () => {
  it('kill -9 at random moments loses nothing acknowledged (8 rounds, two writers each)', async () => {
    const dir = await tempDir();
    const setup = await FileStore.open(dir);
    const account = await setup.createAccount('crash');
    await setup.close();

    const tunnels = new Map<string, string>(); // id → name
    const routes = new Map<string, string>(); // hostname → tunnelId (acknowledged, not deleted)
    const deleted = new Set<string>();
    const deleting = new Set<string>(); // delete started, not acknowledged: either state is fine
    const revoked = new Set<string>();
    let acknowledged = 0;

    for (let round = 0; round < 8; round++) {
      const writers = [startWriter(dir, account.id, `${round}-a`), startWriter(dir, account.id, `${round}-b`)];
      await waitFor(() => writers.every((w) => w.lines.includes('READY') || w.lines.some((l) => l.startsWith('EXIT'))), 10_000, {
        message: 'writers ready',
      });
      // Kill each writer at its own random moment, while it is writing.
      const delays = writers.map(() => 30 + Math.floor(Math.random() * 250));
      await Promise.all(
        writers.map(async (w, i) => {
          const until = Date.now() + delays[i]!;
          await waitFor(() => Date.now() >= until || w.lines.some((l) => l.startsWith('EXIT')), 2_000, { intervalMs: 5 });
          w.child.kill('SIGKILL');
          await w.exited;
        }),
      );
      let winners = 0;
      for (const w of writers) {
        const exit = w.lines.find((l) => l.startsWith('EXIT'));
        expect(exit, `writer exited by itself: ${exit}`).toBeUndefined();
        for (const line of w.lines) {
          const [kind, a, b] = line.split(' ');
          if (kind === 'T') tunnels.set(a!, b!);
          else if (kind === 'R' || kind === 'W') routes.set(a!, b!);
          else if (kind === 'd') deleting.add(a!);
          else if (kind === 'D') {
            routes.delete(a!);
            deleting.delete(a!);
            deleted.add(a!);
          } else if (kind === 'V') revoked.add(a!);
          if (kind === 'W') winners++;
          if (kind !== 'READY' && kind !== 'd') acknowledged++;
        }
      }
      expect(winners).toBeLessThanOrEqual(1);

      // Every acknowledged write is there, and the store loads.
      const s = await FileStore.open(dir);
      try {
        for (const [id, name] of tunnels) expect(await s.getTunnel(id), `tunnel ${name}`).toMatchObject({ id, name });
        for (const [h, tunnelId] of routes) {
          const got = await s.getRoute(h);
          if (got === undefined && deleting.has(h)) continue;
          expect(got?.tunnelId, `route ${h}`).toBe(tunnelId);
        }
        for (const h of deleted) expect(await s.getRoute(h), `deleted route ${h}`).toBeUndefined();
        for (const t of revoked) expect(await s.isRevoked(t), `revocation ${t}`).toBe(true);
        const shared = await s.getRoute(`shared-${round}.example.com`);
        if (winners === 1) expect(shared).toBeDefined();
        // Routes never point at a missing tunnel.
        for (const r of await s.listRoutes()) expect(await s.getTunnel(r.tunnelId), `tunnel of ${r.hostname}`).toBeDefined();
      } finally {
        await s.close();
      }
      // Temp files of the dead writers were cleaned up by open.
      for (const sub of await readdir(dir)) {
        if (sub === 'store.json') continue;
        expect((await readdir(path.join(dir, sub))).filter((f) => f.startsWith('.tmp-')), `temp files in ${sub}`).toEqual([]);
      }
    }
    expect(acknowledged).toBeGreaterThan(16);
  }, 60_000);
});

describe('file store refuses a damaged store', () => {
  async function seeded(): Promise<{ dir: string; tunnelFile: string }> {
    const dir = await tempDir();
    const s = await FileStore.open(dir);
    const acc = await s.createAccount('acme');
    await s.createTunnel(acc.id, 'app');
    await s.close();
    return { dir, tunnelFile: path.join(dir, 'tunnels', fileNameForKey(`${acc.id}\napp`)) };
  }

  async function expectCorrupt(dir: string, file: string): Promise<void> {
    const err = await openStore(`file:${dir}`).then(
      async (s) => {
        await s.close();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('CORRUPT');
    expect((err as StoreError).message).toContain(file);
    expect((err as StoreError).file).toBe(file);
  }

  it('broken JSON', async () => {
    const { dir, tunnelFile } = await seeded();
    await writeFile(tunnelFile, '{"id": "abc", "accountId": tr');
    await expectCorrupt(dir, tunnelFile);
  });

  it('an empty (truncated) record', async () => {
    const { dir, tunnelFile } = await seeded();
    await writeFile(tunnelFile, '');
    await expectCorrupt(dir, tunnelFile);
  });

  it('valid JSON that is not a record of its kind', async () => {
    const { dir, tunnelFile } = await seeded();
    await writeFile(tunnelFile, JSON.stringify({ id: 'x', name: 42 }));
    await expectCorrupt(dir, tunnelFile);
  });

  it('a record under the wrong file name', async () => {
    const { dir } = await seeded();
    const stray = path.join(dir, 'routes', 'other.example.com.json');
    await writeFile(stray, JSON.stringify({ hostname: 'app.example.com', tunnelId: 't', accountId: 'a', createdAt: 1 }));
    await expectCorrupt(dir, stray);
  });

  it('an unknown store format', async () => {
    const { dir } = await seeded();
    const marker = path.join(dir, 'store.json');
    await writeFile(marker, JSON.stringify({ format: 99 }));
    await expectCorrupt(dir, marker);
  });

  it('a store path that is a file', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'not-a-dir');
    await writeFile(file, 'x');
    await expectCorrupt(file, file);
  });

  it('temp files of a dead writer are removed at open; records stay', async () => {
    const { dir, tunnelFile } = await seeded();
    // A pid that is certainly not running: a child that has exited.
    const done = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const deadPid = Number(done.stdout);
    const tmp = path.join(dir, 'routes', `.tmp-${deadPid}-abcdef`);
    await writeFile(tmp, '{"half": ');
    const s = await FileStore.open(dir);
    try {
      expect(existsSync(tmp)).toBe(false);
      expect(existsSync(tunnelFile)).toBe(true);
      expect(await s.listTunnels()).toHaveLength(1);
    } finally {
      await s.close();
    }
  });
});
