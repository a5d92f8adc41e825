import { afterAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { request } from 'undici';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { RELAY_CLI, runCli, startRelay, stopAll, tempDir, type RelayProc } from './harness/procs.js';
import { waitFor } from './harness/wait.js';

// kill -9 the relay in a loop while clients create tunnels and routes through
// its control API: after every restart, everything that was acknowledged is
// there and the store loads.

async function api<T>(base: string, method: string, p: string, auth?: string, body?: unknown): Promise<{ status: number; body: T }> {
  const r = await request(base + p, {
    method: method as 'GET',
    headers: { 'content-type': 'application/json', ...(auth ? { authorization: `Bearer ${auth}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
    headersTimeout: 5_000,
    bodyTimeout: 5_000,
  });
  return { status: r.statusCode, body: (await r.body.json()) as T };
}

describe('relay crash safety (embedded store)', () => {
  const tmp = tempDir();
  afterAll(async () => {
    await stopAll();
    tmp.cleanup();
  });

  it('loses nothing acknowledged across 6 kill -9 rounds', async () => {
    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const store = `file:${path.join(tmp.dir, 'store')}`;
    const acct = await runCli(RELAY_CLI, ['account', 'create', 'crashy', '--store', store, '--keys', keys]);
    expect(acct.code, acct.stderr).toBe(0);
    const zone = await runCli(RELAY_CLI, ['zone', 'add', 'crash.test', '--account', 'crashy', '--store', store]);
    expect(zone.code, zone.stderr).toBe(0);
    let relay: RelayProc = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-crash' });
    const base = () => relay.controlUrl!;
    const enrolled = await api<{ credential: string }>(base(), 'POST', '/v1/enroll', undefined, { token: acct.stdout.trim() });
    const cred = enrolled.body.credential;
    const acked = { tunnels: new Set<string>(), routes: new Set<string>() };
    let n = 0;

    for (let round = 0; round < 6; round++) {
      let stop = false;
      const writers = Array.from({ length: 3 }, async () => {
        while (!stop && n < 10_000) {
          const i = n++;
          try {
            const t = await api<{ tunnel: { name: string } }>(base(), 'POST', '/v1/tunnels', cred, { name: `t${i}` });
            if (t.status !== 201) continue;
            acked.tunnels.add(`t${i}`);
            const r = await api(base(), 'POST', '/v1/routes', cred, { hostname: `h${i}.crash.test`, tunnel: `t${i}` });
            if (r.status === 201) acked.routes.add(`h${i}.crash.test`);
          } catch {
            return; // the relay died under this request: its outcome is unknown, not acknowledged
          }
        }
      });
      // Kill at a moment that varies round to round, while writes are in flight.
      const before = acked.tunnels.size;
      await waitFor(() => acked.tunnels.size >= before + 3 + round * 2, 20_000, { intervalMs: 5, message: 'writes acknowledged' });
      await relay.proc.kill9();
      stop = true;
      await Promise.all(writers);
      relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-crash', ports: { control: relay.control } });
      const tunnels = await api<{ tunnels: Array<{ name: string }> }>(base(), 'GET', '/v1/tunnels', cred);
      const routes = await api<{ routes: Array<{ hostname: string }> }>(base(), 'GET', '/v1/routes', cred);
      const haveT = new Set(tunnels.body.tunnels.map((t) => t.name));
      const haveR = new Set(routes.body.routes.map((r) => r.hostname));
      for (const t of acked.tunnels) expect(haveT.has(t), `round ${round}: tunnel ${t} lost`).toBe(true);
      for (const r of acked.routes) expect(haveR.has(r), `round ${round}: route ${r} lost`).toBe(true);
    }
    expect(acked.tunnels.size).toBeGreaterThan(20);
  });

  it('a corrupted store stops `serve` and the CLI with the file named, instead of starting empty', async () => {
    const keys = path.join(tmp.dir, 'corrupt-key.json');
    generateKeyFile(keys);
    const dir = path.join(tmp.dir, 'corrupt-store');
    const store = `file:${dir}`;
    const made = await runCli(RELAY_CLI, ['tunnel', 'create', 'app', '--zone', 'corrupt.test', '--hostname', 'app.corrupt.test', '--store', store, '--keys', keys]);
    expect(made.code, made.stderr).toBe(0);
    const record = path.join(dir, 'tunnels', readdirSync(path.join(dir, 'tunnels')).find((f) => f.endsWith('.json'))!);
    const good = readFileSync(record);
    writeFileSync(record, good.subarray(0, Math.floor(good.length / 2))); // a torn write no rename could produce

    const serve = await runCli(RELAY_CLI, ['serve', '--id', 'relay-corrupt', '--store', store, '--keys', keys, '--http', '127.0.0.1:0', '--connect', '127.0.0.1:0', '--control', 'off', '--peer', 'off'], {}, tmp.dir, 15_000);
    expect(serve.code).not.toBe(0);
    expect(serve.code).not.toBeNull(); // it exited by itself, it did not hang
    expect(serve.stderr).toContain(`corrupt store record ${record}`);
    expect(serve.stdout).not.toMatch(/"event":"listening"/);

    const again = await runCli(RELAY_CLI, ['tunnel', 'create', 'other', '--hostname', 'other.corrupt.test', '--store', store, '--keys', keys]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain('corrupt store record');
    // Nothing was overwritten: the operator can repair the record by hand.
    expect(readFileSync(record).length).toBe(Math.floor(good.length / 2));
  });
});
