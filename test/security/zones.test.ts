import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { request } from 'undici';
import { startDns, type TestDns } from '../harness/dns.js';
import { generateKeyFile, loadKeyFile } from '../../packages/relay/src/control/keys.js';
import { FileStore } from '../../packages/relay/src/store/file/file-store.js';
import { signTunnelToken } from '../../packages/relay/src/control/provisioning.js';
import { CONNECTOR_CLI, Proc, RELAY_CLI, runCli, startConnector, startRelay, stopAll, tempDir, type RelayProc } from '../harness/procs.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';

// Issue 10, zones (DESIGN §12): with an ordinary account, bob tried to take
// alice's traffic by routing inside, over or around her zone, and to route
// suffixes, localhost and IP literals. Every attempt goes through the real
// control API (and the `tunnel route dns` CLI) of a real relay; the public
// listener then shows that alice's names still reach only alice's origin.

async function api<T = { error?: { code: string; message: string } }>(base: string, method: string, p: string, auth?: string, body?: unknown): Promise<{ status: number; body: T }> {
  const r = await request(base + p, {
    method: method as 'GET',
    headers: { 'content-type': 'application/json', ...(auth ? { authorization: `Bearer ${auth}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  return { status: r.statusCode, body: (await r.body.json()) as T };
}

describe('zones: an account routes only inside zones it holds', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  const storeDir = path.join(tmp.dir, 'store');
  const store = `file:${storeDir}`;
  const records = new Map<string, string>();
  let dns: TestDns;
  let relay: RelayProc;
  let aliceOrigin: Origin;
  let bobOrigin: Origin;
  const home = { alice: path.join(tmp.dir, 'alice'), bob: path.join(tmp.dir, 'bob') };
  const cred = { alice: '', bob: '' };
  const relayCli = (args: string[]) => runCli(RELAY_CLI, [...args, '--store', store], {}, tmp.dir);
  const tunnel = (who: 'alice' | 'bob', args: string[]) => runCli(CONNECTOR_CLI, args, { TUNNEL_HOME: home[who] });

  beforeAll(async () => {
    generateKeyFile(keys);
    dns = await startDns({ txt: records });
    // Never answered: the relay's check waits out its DNS timeout.
    dns.silent.add('_tunnel-challenge.slow.test');
    aliceOrigin = await startOrigin((_q, s) => s.end('alice'));
    bobOrigin = await startOrigin((_q, s) => s.end('bob'));
    relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-zones', extraArgs: ['--zone-claims', '--dns-resolver', `127.0.0.1:${dns.port}`, '--zone-claim-checks', '1', '--metrics', '127.0.0.1:0'] });
    for (const who of ['alice', 'bob'] as const) {
      const acct = await runCli(RELAY_CLI, ['account', 'create', who, '--store', store, '--keys', keys], {}, tmp.dir);
      expect(acct.code, acct.stderr).toBe(0);
      const login = await tunnel(who, ['login', '--relay', relay.controlUrl!, '--enroll', acct.stdout.trim()]);
      expect(login.code, login.stderr).toBe(0);
      cred[who] = (JSON.parse(readFileSync(path.join(home[who], 'cert.json'), 'utf8')) as { credential: string }).credential;
    }
    expect((await relayCli(['zone', 'add', 'alice.test', '--account', 'alice'])).code).toBe(0);
    expect((await relayCli(['zone', 'add', 'bob.test', '--account', 'bob'])).code).toBe(0);
    expect((await tunnel('alice', ['create', 'a'])).code).toBe(0);
    for (const h of ['*.wild.alice.test', 'www.alice.test']) {
      const r = await tunnel('alice', ['route', 'dns', 'a', h]);
      expect(r.code, r.stderr).toBe(0);
    }
    expect((await tunnel('bob', ['create', 'b'])).code).toBe(0);
    expect((await tunnel('bob', ['route', 'dns', 'b', 'app.bob.test'])).code).toBe(0);
    for (const [who, origin] of [['alice', aliceOrigin], ['bob', bobOrigin]] as const) {
      const run = new Proc(`connector-${who}`, process.execPath, [CONNECTOR_CLI, 'run', who === 'alice' ? 'a' : 'b', '--url', origin.url, '--ha-connections', '1', '--log-format', 'json'], { TUNNEL_HOME: home[who] });
      await waitFor(() => run.countLogs((l) => l.event === 'registered') >= 1 || !run.running, 15_000, { message: `${who}'s connector registered` });
      expect(run.running, run.stderr).toBe(true);
    }
  });
  afterAll(async () => {
    await stopAll();
    await dns?.close();
    await aliceOrigin?.close();
    await bobOrigin?.close();
    tmp.cleanup();
  });

  const publicGet = (host: string) => req(`${relay.publicUrl}/`, { host, headers: { accept: 'application/json' } });

  it('bob cannot route inside, over or around alice’s zone, nor suffixes, localhost or IP literals', async () => {
    const cases: Array<[string, string]> = [
      ['x.wild.alice.test', 'zone_owned_by_other_account'],
      ['*.wild.alice.test', 'zone_owned_by_other_account'],
      ['*.alice.test', 'zone_owned_by_other_account'],
      ['alice.test', 'zone_owned_by_other_account'],
      ['*.test', 'zone_owned_by_other_account'],
      ['com', 'hostname_not_in_zone'],
      ['*.com', 'hostname_not_in_zone'],
      ['localhost', 'hostname_not_in_zone'],
      ['127.0.0.1', 'hostname_not_in_zone'],
      ['free.test', 'hostname_not_in_zone'],
    ];
    for (const [hostname, code] of cases) {
      const r = await api(relay.controlUrl!, 'POST', '/v1/routes', cred.bob, { hostname, tunnel: 'b' });
      expect({ hostname, status: r.status, code: r.body.error?.code }).toEqual({ hostname, status: 403, code });
    }
    // The CLI prints the reason and exits non-zero.
    const inside = await tunnel('bob', ['route', 'dns', 'b', 'x.wild.alice.test']);
    expect(inside.code).toBe(1);
    expect(inside.stderr).toMatch(/^tunnel: x\.wild\.alice\.test is inside or covers zone alice\.test of another account \(zone_owned_by_other_account\)\n$/);
    const tld = await tunnel('bob', ['route', 'dns', 'b', 'com']);
    expect(tld.code).toBe(1);
    expect(tld.stderr).toMatch(/com is a top-level domain \(hostname_not_in_zone\)/);
    // Nothing was written.
    const mine = await api<{ routes: Array<{ hostname: string }> }>(relay.controlUrl!, 'GET', '/v1/routes', cred.bob);
    expect(mine.body.routes.map((r) => r.hostname)).toEqual(['app.bob.test']);
    // Bob's own zone works, wildcard included.
    expect((await api(relay.controlUrl!, 'POST', '/v1/routes', cred.bob, { hostname: '*.bob.test', tunnel: 'b' })).status).toBe(201);
  });

  it('on the public listener alice’s names reach only alice’s origin', async () => {
    await waitFor(async () => (await publicGet('x.wild.alice.test')).text === 'alice', 5_000, { message: 'alice served' });
    expect((await publicGet('www.alice.test')).text).toBe('alice');
    expect((await publicGet('deep.x.wild.alice.test')).text).toBe('alice');
    expect((await publicGet('other.alice.test')).status).toBe(404);
    expect((await publicGet('app.bob.test')).text).toBe('bob');
    expect((await publicGet('anything.bob.test')).text).toBe('bob');
  });

  it('a route from before zones never serves names in another account’s zone (exact-then-wildcard within one owner)', async () => {
    // What a store from before zones may hold: bob's routes inside alice's zone.
    const direct = await FileStore.open(storeDir);
    try {
      const bob = (await direct.getAccountByName('bob'))!;
      const b = (await direct.getTunnelByName(bob.id, 'b'))!;
      await direct.addRoute({ hostname: '*.alice.test', tunnelId: b.id, accountId: bob.id });
      await direct.addRoute({ hostname: 'exact.wild.alice.test', tunnelId: b.id, accountId: bob.id });
      // Control: a legacy route in no zone still serves (running installs keep working).
      await direct.addRoute({ hostname: 'legacy.nozone.test', tunnelId: b.id, accountId: bob.id });
      await waitFor(async () => (await publicGet('legacy.nozone.test')).text === 'bob', 5_000, { message: 'relay loaded the legacy routes' });
      expect((await publicGet('other.alice.test')).status).toBe(404);
      expect((await publicGet('exact.wild.alice.test')).text).toBe('alice');
      expect((await publicGet('www.alice.test')).text).toBe('alice');
      for (const h of ['*.alice.test', 'exact.wild.alice.test', 'legacy.nozone.test']) await direct.deleteRoute(h);
    } finally {
      await direct.close();
    }
  });

  it('operator zone commands refuse suffixes, bare TLDs, IPs, localhost and nesting; list and remove', async () => {
    for (const [zone, why] of [
      ['com', /com is a top-level domain \(zone_not_allowed\)/],
      ['co.uk', /co\.uk is a public suffix/],
      ['test', /top-level domain/],
      ['localhost', /localhost is never routed/],
      ['127.0.0.1', /IP literal/],
      ['x.alice.test', /zone x\.alice\.test overlaps zone alice\.test of another account \(zone_owned_by_other_account\)/],
      ['alice.test', /zone alice\.test is held by another account/],
    ] as const) {
      const r = await relayCli(['zone', 'add', zone, '--account', 'bob']);
      expect(r.code, zone).not.toBe(0);
      expect(r.stderr, zone).toMatch(why);
    }
    const unknown = await relayCli(['zone', 'add', 'z.test', '--account', 'nobody']);
    expect(unknown.stderr).toMatch(/no account nobody/);
    const list = await relayCli(['zone', 'list', '--output', 'json']);
    expect((JSON.parse(list.stdout) as Array<{ zone: string; account: string }>).map((z) => `${z.zone}:${z.account}`)).toEqual(['alice.test:alice', 'bob.test:bob']);
    expect((await relayCli(['zone', 'add', 'spare.test', '--account', 'bob'])).code).toBe(0);
    const wrong = await relayCli(['zone', 'remove', 'spare.test', '--account', 'alice']);
    expect(wrong.code).not.toBe(0);
    expect((await relayCli(['zone', 'remove', 'spare.test', '--account', 'bob'])).code).toBe(0);
    expect((await relayCli(['zone', 'list'])).stdout).not.toContain('spare.test');
  });

  it('DNS claim: the relay resolves _tunnel-challenge.<zone> at the configured resolver and grants the zone', async () => {
    // Someone else's zone cannot even be claimed.
    const theirs = await api(relay.controlUrl!, 'POST', '/v1/zones/claims', cred.bob, { zone: 'shop.alice.test' });
    expect([theirs.status, theirs.body.error?.code]).toEqual([403, 'zone_owned_by_other_account']);
    const suffix = await api(relay.controlUrl!, 'POST', '/v1/zones/claims', cred.bob, { zone: 'github.io' });
    expect([suffix.status, suffix.body.error?.code]).toEqual([403, 'zone_not_allowed']);

    const claim = await tunnel('bob', ['zone', 'claim', 'bobcorp.test']);
    expect(claim.code, claim.stderr).toBe(0);
    const m = /(_tunnel-challenge\.bobcorp\.test)\s+TXT\s+"([^"]+)"/.exec(claim.stdout);
    expect(m).not.toBeNull();
    // Not published yet: refused with the reason, nothing granted.
    const early = await tunnel('bob', ['zone', 'claim', 'bobcorp.test', '--verify']);
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(/no TXT record at _tunnel-challenge\.bobcorp\.test.*\(challenge_not_found\)/);
    expect(dns.queries).toContain('_tunnel-challenge.bobcorp.test');
    // alice's token for the same zone does not work for bob (tokens are per account).
    const aliceClaim = await api<{ value: string }>(relay.controlUrl!, 'POST', '/v1/zones/claims', cred.alice, { zone: 'bobcorp.test' });
    expect(aliceClaim.body.value).not.toBe(m![2]);
    records.set('_tunnel-challenge.bobcorp.test', aliceClaim.body.value);
    const wrong = await tunnel('bob', ['zone', 'claim', 'bobcorp.test', '--verify']);
    expect(wrong.stderr).toMatch(/does not hold this account's token/);
    records.set('_tunnel-challenge.bobcorp.test', m![2]!);
    const ok = await tunnel('bob', ['zone', 'claim', 'bobcorp.test', '--verify']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('Zone bobcorp.test is now held by your account');
    const zones = await tunnel('bob', ['zone', 'list', '--output', 'json']);
    expect((JSON.parse(zones.stdout) as Array<{ zone: string; source: string }>).map((z) => `${z.zone}:${z.source}`)).toEqual(['bob.test:operator', 'bobcorp.test:dns']);
    expect((await tunnel('bob', ['route', 'dns', 'b', 'www.bobcorp.test'])).code).toBe(0);
    // And now alice cannot take it, even with a record she controls.
    const late = await api(relay.controlUrl!, 'POST', '/v1/zones/claims/verify', cred.alice, { zone: 'bobcorp.test' });
    expect([late.status, late.body.error?.code]).toEqual([403, 'zone_owned_by_other_account']);
  });

  it('zone-claim DNS checks have a ceiling: one more than --zone-claim-checks gets 429, counted in /metrics', async () => {
    const slow = api(relay.controlUrl!, 'POST', '/v1/zones/claims/verify', cred.bob, { zone: 'slow.test' });
    await waitFor(() => dns.queries.includes('_tunnel-challenge.slow.test'), 5_000, { message: 'the slow check reached the DNS server' });
    const busy = await api(relay.controlUrl!, 'POST', '/v1/zones/claims/verify', cred.alice, { zone: 'alicecorp.test' });
    expect([busy.status, busy.body.error?.code]).toEqual([429, 'zone_claims_busy']);
    const first = await slow;
    expect([first.status, first.body.error?.code]).toEqual([403, 'challenge_not_found']);
    expect(first.body.error?.message).toMatch(/cannot resolve _tunnel-challenge\.slow\.test/);
    const port = (await relay.proc.waitForLog((l) => l.event === 'metrics-listening')).port as number;
    const text = (await req(`http://127.0.0.1:${port}/metrics`)).text;
    expect(text).toMatch(/^tunnel_relay_zone_claim_checks_max 1$/m);
    expect(text).toMatch(/^tunnel_relay_zone_claim_checks_refused_total 1$/m);
    expect(text).toMatch(/^tunnel_relay_zone_claim_checks_in_flight 0$/m);
    // Free again once the slow one is done.
    const after = await api(relay.controlUrl!, 'POST', '/v1/zones/claims/verify', cred.alice, { zone: 'alicecorp.test' });
    expect(after.body.error?.code).toBe('challenge_not_found');
  });
});

describe('zone adopt: an existing store migrates, conflicts are reported, never guessed', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  const storeDir = path.join(tmp.dir, 'store');
  const store = `file:${storeDir}`;
  afterAll(async () => {
    await stopAll();
    tmp.cleanup();
  });

  it('a relay on a store from before zones keeps serving and warns; adopt grants what routes imply and reports conflicts', async () => {
    generateKeyFile(keys);
    const origin = await startOrigin((_q, s) => s.end('legacy'));
    // A store as an older relay left it: routes, no zones.
    const direct = await FileStore.open(storeDir);
    const ids: Record<string, string> = {};
    let aliceTunnel;
    for (const who of ['alice', 'carol', 'mallory']) {
      const a = await direct.createAccount(who);
      ids[who] = a.id;
      const t = await direct.createTunnel(a.id, 'app');
      if (who === 'alice') aliceTunnel = t;
      const hosts = { alice: ['app.example.com', '*.wild.alice.test'], carol: ['shop.example.com'], mallory: ['10.0.0.1'] }[who]!;
      for (const h of hosts) await direct.addRoute({ hostname: h, tunnelId: t.id, accountId: a.id });
    }
    await direct.close();

    const relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-legacy' });
    const warn = await relay.proc.waitForLog((l) => l.event === 'routes-outside-zones');
    expect(warn.count).toBe(4);
    expect(String(warn.msg)).toContain('tunnel-relay zone adopt');
    // Still serving: alice's connector on her legacy tunnel reaches her origin.
    const token = signTunnelToken(loadKeyFile(keys), aliceTunnel!, [relay.connectUrl], undefined, 3600);
    await startConnector({ token, relays: [relay.connectUrl], url: origin.url, ha: 1 });
    expect((await req(`${relay.publicUrl}/`, { host: 'x.wild.alice.test' })).text).toBe('legacy');

    const adopt = await runCli(RELAY_CLI, ['zone', 'adopt', '--store', store], {}, tmp.dir);
    expect(adopt.code).toBe(1);
    expect(adopt.stdout).toContain('granted zone wild.alice.test to account alice (routes: *.wild.alice.test)');
    expect(adopt.stdout).toMatch(/conflict: route app\.example\.com of account alice: zone example\.com is implied by routes of several accounts \(alice, carol\)/);
    expect(adopt.stdout).toMatch(/conflict: route shop\.example\.com of account carol/);
    expect(adopt.stdout).toMatch(/conflict: route 10\.0\.0\.1 of account mallory: no zone can hold 10\.0\.0\.1/);
    expect(adopt.stdout).toContain('1 zone(s) granted, 0 route(s) already inside a zone, 3 conflict(s)');
    const list = await runCli(RELAY_CLI, ['zone', 'list', '--output', 'json', '--store', store], {}, tmp.dir);
    expect((JSON.parse(list.stdout) as Array<{ zone: string; account: string; source: string }>).map((z) => `${z.zone}:${z.account}:${z.source}`)).toEqual(['wild.alice.test:alice:adopt']);
    // Still served once the zone is granted.
    await waitFor(async () => (await req(`${relay.publicUrl}/`, { host: 'x.wild.alice.test' })).text === 'legacy', 5_000);
    // Run again: nothing new, the same conflicts, the granted route counted as covered.
    const again = await runCli(RELAY_CLI, ['zone', 'adopt', '--store', store], {}, tmp.dir);
    expect(again.stdout).toContain('0 zone(s) granted, 1 route(s) already inside a zone, 3 conflict(s)');
    await origin.close();
  });
});
