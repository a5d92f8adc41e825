import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { CONNECTOR_CLI, RELAY_CLI, runCli, startConnector, startRelay, stopAll, tempDir, type Proc, type RelayProc } from './harness/procs.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';

// Claims from the README that only hold if every relay acts on them, through
// the user's own commands (`tunnel route dns`, `tunnel delete --force`,
// `tunnel-relay revoke`):
//  - routing: exact, then the nearest `*.` wildcard, through every relay;
//  - revoking a RUNNING connector's credential, and deleting its tunnel with
//    --force, disconnect it from every relay within 5 s, and it exits 3;
//  - a credential revoked or a tunnel deleted before the connector starts
//    exits 3 too, with the reason.
// Each revocation is checked with one connector per relay (pinned there with
// --no-discover): a connector spread over both relays would exit as soon as
// the first relay told it, hiding a relay that never acted.

describe('routes and revocation, fleet-wide', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  const store = `file:${path.join(tmp.dir, 'store')}`;
  const home = path.join(tmp.dir, 'carol-home');
  let relays: RelayProc[];
  let exact: Origin;
  let wild: Origin;
  const tunnel = (args: string[]) => runCli(CONNECTOR_CLI, args, { TUNNEL_HOME: home });
  const tokenFor = async (name: string) => {
    const t = await tunnel(['token', name]);
    expect(t.code, t.stderr).toBe(0);
    return t.stdout.trim();
  };
  /** One connector per relay, each dialing only its relay. */
  const pinned = (token: string, url: string) =>
    Promise.all(relays.map((r) => startConnector({ token, relays: [r.connectUrl], url, ha: 2, extraArgs: ['--no-discover'] })));
  /** Resolves with each connector's exit once all exited; rejects after `ms`. */
  const allExit = (ps: Proc[], ms: number) =>
    Promise.race([
      Promise.all(ps.map((p) => p.exited)),
      new Promise<never>((_, rej) =>
        setTimeout(() => rej(new Error(`still running ${ms} ms later: ${ps.filter((p) => p.running).map((p) => p.pid).join(', ')}`)), ms),
      ),
    ]);

  beforeAll(async () => {
    generateKeyFile(keys);
    exact = await startOrigin((q, s) => s.end(`exact ${q.headers.host} ${q.url}`));
    wild = await startOrigin((q, s) => s.end(`wild ${q.headers.host} ${q.url}`));
    relays = [];
    for (const id of ['relay-a', 'relay-b']) relays.push(await startRelay({ dir: tmp.dir, store, keys, id }));
    const acct = await runCli(RELAY_CLI, ['account', 'create', 'carol', '--store', store, '--keys', keys], {}, tmp.dir);
    expect(acct.code, acct.stderr).toBe(0);
    // carol routes only inside zones she holds (an operator grants them).
    for (const zone of ['x.test', 'x2.test', 'x3.test']) {
      const z = await runCli(RELAY_CLI, ['zone', 'add', zone, '--account', 'carol', '--store', store], {}, tmp.dir);
      expect(z.code, z.stderr).toBe(0);
    }
    const login = await tunnel(['login', '--relay', relays[0]!.controlUrl!, '--enroll', acct.stdout.trim()]);
    expect(login.code, login.stderr).toBe(0);
  });
  afterAll(async () => {
    await stopAll();
    await exact?.close();
    await wild?.close();
    tmp.cleanup();
  });

  it("`route dns NAME '*.x.test'`: any name under x.test reaches that tunnel through every relay; an exact route wins", async () => {
    for (const name of ['wild', 'exact']) expect((await tunnel(['create', name])).code).toBe(0);
    const w = await tunnel(['route', 'dns', 'wild', '*.x.test']);
    expect(w.code, w.stderr).toBe(0);
    const e = await tunnel(['route', 'dns', 'exact', 'a.x.test']);
    expect(e.code, e.stderr).toBe(0);
    const list = await tunnel(['route', 'list']);
    expect(list.stdout).toContain('*.x.test');
    const cw = await startConnector({ token: await tokenFor('wild'), relays: relays.map((r) => r.connectUrl), url: wild.url, ha: 2 });
    const ce = await startConnector({ token: await tokenFor('exact'), relays: relays.map((r) => r.connectUrl), url: exact.url, ha: 2 });
    for (const r of relays) {
      const get = (host: string, p = '/') =>
        waitFor(async () => {
          const x = await req(`${r.publicUrl}${p}`, { host, headers: { accept: 'application/json' } });
          return x.status === 200 || x.status === 404 ? x : null; // 530 while a connection is still registering
        }, 5_000, { message: `${host} through ${r.id}` });
      expect((await get('b.x.test', '/w')).text).toBe('wild b.x.test /w');
      expect((await get('Deep.Er.X.Test', '/d')).text).toBe('wild Deep.Er.X.Test /d');
      expect((await get('a.x.test', '/e')).text).toBe('exact a.x.test /e');
      // The wildcard covers names under x.test, not x.test itself.
      const apex = await get('x.test');
      expect(apex.status).toBe(404);
      expect(apex.json<{ error: { code: string } }>().error.code).toBe('unknown_hostname');
    }
    // `route delete` takes the wildcard off every relay; the exact route stays.
    const del = await tunnel(['route', 'delete', '*.x.test']);
    expect(del.code, del.stderr).toBe(0);
    for (const r of relays) {
      await waitFor(async () => (await req(`${r.publicUrl}/`, { host: 'b.x.test' })).status === 404, 5_000, { message: `wildcard gone from ${r.id}` });
      expect((await req(`${r.publicUrl}/e`, { host: 'a.x.test' })).text).toBe('exact a.x.test /e');
    }
    await cw.stop();
    await ce.stop();
  });

  it('`tunnel-relay revoke` on a running connector: every relay drops it within 5 s, and it exits 3 with the reason', async () => {
    expect((await tunnel(['create', 'rev'])).code).toBe(0);
    expect((await tunnel(['route', 'dns', 'rev', 'rev.x2.test'])).code).toBe(0);
    const token = await tokenFor('rev');
    const cs = await pinned(token, exact.url);
    const revoke = await runCli(RELAY_CLI, ['revoke', token, '--store', store], {}, tmp.dir);
    expect(revoke.code, revoke.stderr).toBe(0);
    const t0 = Date.now(); // the revocation is recorded: the 5 s start here
    const exits = await allExit(cs, 5_000 - (Date.now() - t0));
    expect(Date.now() - t0).toBeLessThan(5_000);
    for (const [i, { code }] of exits.entries()) {
      expect(code, `connector pinned to ${relays[i]!.id}: ${cs[i]!.stderr}`).toBe(3);
      expect(cs[i]!.stderr).toMatch(/credential_revoked/);
      // The relay said why, and logged it.
      expect(relays[i]!.proc.countLogs((l) => l.event === 'closed' && String(l.reason).startsWith('credential_revoked'))).toBeGreaterThanOrEqual(1);
    }
    // No reconnect storm: each connector dialed each of its two slots at most twice.
    for (const c of cs) expect(c.countLogs((l) => l.event === 'dial')).toBeLessThanOrEqual(4);
    // Starting again with the revoked credential: refused at connect, exit 3.
    const again = await runCli(CONNECTOR_CLI, ['run', '--url', exact.url, '--relay', relays[1]!.connectUrl, '--no-discover'], { TUNNEL_TOKEN: token, TUNNEL_HOME: home });
    expect(again.code, again.stderr).toBe(3);
    expect(again.stderr).toMatch(/credential_revoked/);
  });

  it('`tunnel delete --force`: refused without --force, then every relay drops the connectors within 5 s, exit 3; its token is refused after', async () => {
    expect((await tunnel(['create', 'gone'])).code).toBe(0);
    expect((await tunnel(['route', 'dns', 'gone', 'gone.x3.test'])).code).toBe(0);
    const token = await tokenFor('gone');
    const cs = await pinned(token, exact.url);
    const refused = await waitFor(async () => {
      const r = await tunnel(['delete', 'gone']);
      return /tunnel_has_connectors/.test(r.stderr) ? r : null; // once presence reached the store
    }, 5_000, { message: 'delete refused while connected' });
    expect(refused.code).not.toBe(0);
    const del = await tunnel(['delete', 'gone', '--force']);
    expect(del.code, del.stderr).toBe(0);
    const t0 = Date.now(); // the delete is acknowledged: the 5 s start here
    const exits = await allExit(cs, 5_000 - (Date.now() - t0));
    expect(Date.now() - t0).toBeLessThan(5_000);
    for (const [i, { code }] of exits.entries()) {
      expect(code, `connector pinned to ${relays[i]!.id}: ${cs[i]!.stderr}`).toBe(3);
      expect(cs[i]!.stderr).toMatch(/tunnel_deleted/);
      expect(relays[i]!.proc.countLogs((l) => l.event === 'closed' && String(l.reason).startsWith('tunnel_deleted'))).toBeGreaterThanOrEqual(1);
    }
    const r = await req(`${relays[0]!.publicUrl}/`, { host: 'gone.x3.test', headers: { accept: 'application/json' } });
    expect(r.status).toBe(404);
    // The deleted tunnel's token: refused at connect with its reason, exit 3.
    const again = await runCli(CONNECTOR_CLI, ['run', '--url', exact.url, '--relay', relays[0]!.connectUrl, '--no-discover'], { TUNNEL_TOKEN: token, TUNNEL_HOME: home });
    expect(again.code, again.stderr).toBe(3);
    expect(again.stderr).toMatch(/tunnel_deleted/);
  });
});
