// Quick tunnels (issue 14) against an ordinary account and a copied token:
// the quick zone is closed to every account, and a quick token is bound to
// its one hostname and its one connector: it is no account credential, it
// serves no named tunnel, it renews only from the live connector.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { peekClaims } from '@tunnel/protocol';
import { CONNECTOR_CLI, RELAY_CLI, runCli, stopAll } from '../harness/procs.js';
import { connectRaw, registerSession } from '../harness/evil-connector.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';
import { postQuick, startQuickRelays, type QuickFleet } from '../harness/quick.js';

async function call(base: string, method: string, p: string, auth?: string, body?: unknown): Promise<{ status: number; body: { error?: { code: string; message: string } } & Record<string, unknown> }> {
  const r = await fetch(base + p, { method, headers: { 'content-type': 'application/json', ...(auth ? { authorization: `Bearer ${auth}` } : {}) }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json()) as { error?: { code: string; message: string } } & Record<string, unknown> };
}

describe('quick tunnels: the zone is reserved and a quick token is bound to one hostname and one connector', () => {
  let fleet: QuickFleet;
  let control: string;
  let aliceCred = '';
  let aliceToken = '';
  const relayCli = (args: string[]) => runCli(RELAY_CLI, [...args, '--store', fleet.store], {}, fleet.dir);

  beforeAll(async () => {
    fleet = await startQuickRelays({ relays: 1, relayArgs: ['--max-live-quick-tunnels-per-ip', '0'] });
    control = fleet.relays[0]!.controlUrl!;
    const acct = await runCli(RELAY_CLI, ['account', 'create', 'alice', '--store', fleet.store, '--keys', fleet.keys], {}, fleet.dir);
    expect(acct.code, acct.stderr).toBe(0);
    const home = path.join(fleet.dir, 'alice');
    const login = await runCli(CONNECTOR_CLI, ['login', '--relay', control, '--enroll', acct.stdout.trim()], { TUNNEL_HOME: home });
    expect(login.code, login.stderr).toBe(0);
    aliceCred = (JSON.parse(readFileSync(path.join(home, 'cert.json'), 'utf8')) as { credential: string }).credential;
    expect((await relayCli(['zone', 'add', 'alice.test', '--account', 'alice'])).code).toBe(0);
    const created = await call(control, 'POST', '/v1/tunnels', aliceCred, { name: 'a' });
    expect(created.status).toBe(201);
    aliceToken = (created.body.credentials as { token: string }).token;
    expect((await call(control, 'POST', '/v1/routes', aliceCred, { hostname: 'www.alice.test', tunnel: 'a' })).status).toBe(201);
  });
  afterAll(async () => {
    await stopAll();
    fleet?.cleanup();
  });

  it('no account routes inside the quick zone, holds it, or becomes the quick account', async () => {
    for (const hostname of ['x.try.test', '*.try.test', 'try.test', '*.test']) {
      const r = await call(control, 'POST', '/v1/routes', aliceCred, { hostname, tunnel: 'a' });
      expect({ hostname, status: r.status, code: r.body.error?.code }).toEqual({ hostname, status: 403, code: 'zone_owned_by_other_account' });
    }
    const zone = await relayCli(['zone', 'add', 'sub.try.test', '--account', 'alice']);
    expect(zone.code).not.toBe(0);
    expect(zone.stderr).toMatch(/overlaps zone try\.test of another account/);
    for (const args of [['account', 'create', '@quick', '--keys', fleet.keys], ['tunnel', 'create', 'q', '--account', '@quick', '--hostname', 'x.try.test', '--keys', fleet.keys]]) {
      const r = await relayCli(args);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/account name @quick is reserved for quick tunnels/);
    }
  });

  it('a quick token is no account credential: it creates no tunnel and routes no hostname', async () => {
    const q = await postQuick(control, 'conn-1');
    expect(q.status).toBe(201);
    const claims = peekClaims(q.body.token)!;
    expect(claims.quick).toEqual({ hostname: q.body.hostname, connectorId: 'conn-1' });
    expect((claims.exp as number) - (claims.iat as number)).toBe(8 * 3600);
    for (const [method, p, body] of [
      ['POST', '/v1/tunnels', { name: 'stolen' }],
      ['POST', '/v1/routes', { hostname: 'other.try.test', tunnel: q.body.tunnelId }],
      ['POST', '/v1/routes', { hostname: 'www.alice.test', tunnel: q.body.tunnelId }],
      ['GET', '/v1/tunnels', undefined],
    ] as const) {
      const r = await call(control, method, p, q.body.token, body);
      expect({ p, status: r.status, code: r.body.error?.code }).toEqual({ p, status: 401, code: 'invalid_credential' });
    }
  });

  it('a quick token connects only as its own connector, and never serves a named tunnel’s hostname', async () => {
    const q = await postQuick(control, 'conn-2');
    const wrong = await connectRaw(fleet.relays[0]!.connectUrl, q.body.token, 'someone-else');
    expect(wrong.ok).toBe(false);
    if (!wrong.ok) {
      expect(wrong.status).toBe(403);
      expect(wrong.body).toMatch(/quick_wrong_connector/);
    }
    const right = await connectRaw(fleet.relays[0]!.connectUrl, q.body.token, 'conn-2');
    expect(right.ok).toBe(true);
    if (!right.ok) return;
    const session = await registerSession(right.ws, 'conn-2', 0);
    // Alice's named hostname has no connector of its own: the quick session is not one.
    const named = await req(`${fleet.relays[0]!.publicUrl}/`, { host: 'www.alice.test', headers: { accept: 'application/json' } });
    expect(named.status).toBe(530);
    // A named tunnel's token is no quick token.
    for (const [method, p] of [['POST', '/v1/quick/renew'], ['DELETE', '/v1/quick']] as const) {
      const r = await call(control, method, p, aliceToken);
      expect({ p, status: r.status, code: r.body.error?.code }).toEqual({ p, status: 403, code: 'not_a_quick_token' });
    }
    session.close();
    right.ws.terminate();
  });

  // Every quick tunnel belongs to the one @quick account, so the named-hostname
  // check above cannot see a relay that lets a connection serve another tunnel
  // of its own account: only this one can.
  it('a quick session is no connector of another quick hostname (both tunnels are @quick\'s): it stays offline and the session sees no stream', async () => {
    const q = await postQuick(control, 'conn-6');
    const up = await connectRaw(fleet.relays[0]!.connectUrl, q.body.token, 'conn-6');
    if (!up.ok) throw new Error(up.body);
    const session = await registerSession(up.ws, 'conn-6', 0);
    let streams = 0;
    session.on('stream', (s: { destroy(): void }) => {
      streams++;
      s.destroy();
    });
    const other = await postQuick(control, 'conn-other');
    expect(peekClaims(other.body.token)!.accountId).toBe(peekClaims(q.body.token)!.accountId);
    const otherHost = await req(`${fleet.relays[0]!.publicUrl}/`, { host: other.body.hostname, headers: { accept: 'application/json' } });
    expect({ status: otherHost.status, code: otherHost.header('tunnel-error'), streams }).toEqual({ status: 530, code: 'tunnel_offline', streams: 0 });
    session.close();
    up.ws.terminate();
  });

  it('renewal: only while its own connector is connected; the new token has the same binding', async () => {
    const q = await postQuick(control, 'conn-3');
    const before = await call(control, 'POST', '/v1/quick/renew', q.body.token);
    expect(before.status).toBe(409);
    expect(before.body.error?.code).toBe('quick_not_connected');
    const up = await connectRaw(fleet.relays[0]!.connectUrl, q.body.token, 'conn-3');
    if (!up.ok) throw new Error(up.body);
    const session = await registerSession(up.ws, 'conn-3', 0);
    // Presence reaches the store within a heartbeat.
    const renewed = await waitFor(async () => {
      const r = await call(control, 'POST', '/v1/quick/renew', q.body.token);
      return r.status === 200 ? r : null;
    }, 5_000, { message: 'renewal once connected' });
    expect(renewed.status).toBe(200);
    const fresh = peekClaims(renewed.body.token as string)!;
    expect(fresh.tunnelId).toBe(q.body.tunnelId);
    expect(fresh.quick).toEqual({ hostname: q.body.hostname, connectorId: 'conn-3' });
    expect(fresh.jti).not.toBe(peekClaims(q.body.token)!.jti);
    session.close();
    up.ws.terminate();
  });

  it('a quick token removes its own hostname, never another', async () => {
    const a = await postQuick(control, 'conn-4');
    const b = await postQuick(control, 'conn-5');
    const del = await call(control, 'DELETE', '/v1/quick', a.body.token);
    expect(del.status).toBe(200);
    expect(del.body.deleted).toBe(a.body.hostname);
    const again = await call(control, 'DELETE', '/v1/quick', a.body.token);
    expect(again.status).toBe(403);
    const pub = fleet.relays[0]!.publicUrl;
    expect((await req(`${pub}/`, { host: a.body.hostname })).status).toBe(404);
    expect((await req(`${pub}/`, { host: b.body.hostname })).status).toBe(530);
  });
});
