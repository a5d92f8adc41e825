import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { Agent } from 'undici';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { createTunnel, startConnector, startRelay, stopAll, tempDir, type RelayProc } from './harness/procs.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { req } from './harness/http.js';
import { makeCa, opensslMissing, type Ca } from './harness/certs.js';
import { metricsUrl, scrape } from './harness/limit-metrics.js';
import { freePort } from './harness/ports.js';
import { ordersTotal, peerCertificate } from './harness/acme-peer.js';
import { startDns, type TestDns } from './harness/dns.js';
import { writeDnsHook, type DnsHookScript } from './harness/acme-dns-hook.js';
import { pebbleMissing, startPebble, type Pebble } from './harness/pebble.js';
import { startRedis, type RedisServer } from './harness/redis.js';
import { launchChromium, loginToDashboard, noteChromium, skipBrowser } from './harness/dashboard-browser.js';
import { waitFor } from './harness/wait.js';
import { startDnsHookRelay, type DnsHookRelay } from './harness/acme-dns-relay.js';

// A Redis fleet of two relays with ACME and no static certificate:
// - names under a routed *.zone.test share one *.zone.test certificate,
//   proven by DNS-01 through the operator's hook (which publishes the TXT
//   record in the harness's DNS server, where pebble looks it up): one order
//   for the fleet, both relays serve it for different names;
// - unknown names get the self-signed certificate each relay makes at start,
//   and the 404 page;
// - --acme-orders-per-hour is one budget for the fleet, kept in Redis: the
//   relay that has ordered nothing is refused once the other used it.

const skip = opensslMissing('ACME DNS-01 test') ?? pebbleMissing('ACME DNS-01 test');
noteChromium("the dashboard's ACME line");
const OPERATOR_KEY = 'acme-dashboard-operator-key-0123';

describe.skipIf(skip !== null)('ACME DNS-01 wildcards, self-signed fallback, fleet-wide order ceiling (Redis, two relays)', () => {
  const tmp = tempDir();
  let ca: Ca;
  let dns: TestDns;
  let hook: DnsHookScript;
  let pebble: Pebble;
  let redis: RedisServer | null;
  let b: RelayProc;
  let c: RelayProc;
  const https = { b: 0, c: 0 };
  const metrics = { b: '', c: '' };
  let origin: Origin;
  let root: string;
  const all = () => [...b.proc.logs, ...c.proc.logs];

  beforeAll(async () => {
    redis = await startRedis();
    if (!redis) return;
    ca = makeCa(tmp.dir);
    dns = await startDns({ control: true });
    hook = writeDnsHook(tmp.dir, { controlUrl: dns.controlUrl! });
    // Only DNS-01 here: pebble's HTTP and TLS validation ports lead nowhere.
    pebble = await startPebble({ dir: tmp.dir, ca, dnsPort: dns.port, httpPort: await freePort(), tlsPort: await freePort() });
    root = await pebble.root();
    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const store = redis.url;
    const operatorKey = path.join(tmp.dir, 'operator-key');
    writeFileSync(operatorKey, OPERATOR_KEY + '\n', { mode: 0o600 });
    origin = await startOrigin((q, s) => s.end(`hello ${q.headers.host}`));
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'wild', hostnames: ['*.zone.test', 'other.test'] });
    const start = async (id: string) => {
      const port = await freePort();
      const relay = await startRelay({
        dir: tmp.dir,
        store,
        keys,
        id,
        env: { NODE_EXTRA_CA_CERTS: ca.cert },
        // No --tls-cert: the public HTTPS listener's fallback is self-signed.
        extraArgs: ['--https', `127.0.0.1:${port}`, '--metrics', '127.0.0.1:0',
          '--acme-directory', pebble.directory, '--acme-email', 'ops@example.com', '--acme-challenge', 'dns-01',
          '--acme-dns-hook', hook.file, '--acme-orders-per-hour', '1', '--acme-handshake-wait', '60s', '--operator-key-file', operatorKey],
      });
      return { relay, port };
    };
    ({ relay: b, port: https.b } = await start('relay-b'));
    ({ relay: c, port: https.c } = await start('relay-c'));
    metrics.b = await metricsUrl(b);
    metrics.c = await metricsUrl(c);
    await startConnector({ token, relays: [b.connectUrl, c.connectUrl], url: origin.url, ha: 2 });
  });
  afterAll(async () => {
    await stopAll();
    await pebble?.stop();
    await dns?.close();
    await redis?.stop();
    await origin?.close();
    tmp.cleanup();
  });

  it('without --tls-cert the relay starts and answers an unknown name with a self-signed certificate and the 404 page, ordering nothing', async () => {
    if (!redis) return;
    expect(b.proc.logs.some((l) => l.event === 'tls-fallback-self-signed')).toBe(true);
    const cert = await peerCertificate(https.b, 'nobody.test');
    expect(cert.subject).toBe('CN=tunnel-relay fallback');
    expect(cert.issuer).toBe(cert.subject);
    expect(cert.verify(cert.publicKey)).toBe(true);
    const dispatcher = new Agent({ connect: { rejectUnauthorized: false, servername: 'nobody.test' } });
    const r = await req(`https://127.0.0.1:${https.b}/`, { host: 'nobody.test', dispatcher, headers: { accept: 'text/html' } });
    await dispatcher.close();
    expect(r.status).toBe(404);
    expect(r.header('tunnel-error')).toBe('unknown_hostname');
    expect(r.text).toMatch(/<html/i);
    expect(all().filter((l) => l.event === 'acme-order')).toEqual([]);
  });

  it('two names under *.zone.test on two relays: one DNS-01 order for *.zone.test through the hook, both served with it', async () => {
    if (!redis) return;
    const trusting = (servername: string) => new Agent({ connect: { ca: root, servername } });
    const [agentA, agentB] = [trusting('a.zone.test'), trusting('b.zone.test')];
    const viaB = await req(`https://127.0.0.1:${https.b}/`, { host: 'a.zone.test', dispatcher: agentA });
    expect(viaB.status).toBe(200);
    expect(viaB.text).toBe('hello a.zone.test');
    const issued = b.proc.logs.find((l) => l.event === 'acme-issued')!;
    expect(issued).toMatchObject({ name: '*.zone.test', why: 'on-demand' });
    // The hook published the zone's record (arguments and environment alike), pebble read it, the hook cleared it.
    const calls = hook.calls();
    expect(calls.map((x) => [x.action, x.record])).toEqual([['set', '_acme-challenge.zone.test'], ['clear', '_acme-challenge.zone.test']]);
    expect(calls[0]!.env).toEqual({ action: 'set', record: '_acme-challenge.zone.test', value: calls[0]!.value });
    expect(dns.queries).toContain('_acme-challenge.zone.test');
    expect(dns.txt.has('_acme-challenge.zone.test')).toBe(false);

    const viaC = await req(`https://127.0.0.1:${https.c}/`, { host: 'b.zone.test', dispatcher: agentB });
    expect(viaC.status).toBe(200);
    expect(viaC.text).toBe('hello b.zone.test');
    await Promise.all([agentA.close(), agentB.close()]);
    for (const [port, name] of [[https.b, 'a.zone.test'], [https.c, 'b.zone.test'], [https.b, 'c.zone.test']] as const) {
      const cert = await peerCertificate(port, name);
      expect(cert.subjectAltName).toBe('DNS:*.zone.test');
      expect(cert.fingerprint256).toBe(issued.fingerprint);
    }
    // One order for the fleet and for every name seen.
    expect(all().filter((l) => l.event === 'acme-order').map((l) => l.name)).toEqual(['*.zone.test']);
    expect(await ordersTotal(metrics.b)).toMatchObject({ ok: 1, failed: 0, rate_limited: 0 });
    expect(await ordersTotal(metrics.c)).toMatchObject({ ok: 0, failed: 0, rate_limited: 0 });
  });

  it('--acme-orders-per-hour is the fleet\'s: relay C, which has ordered nothing, is refused the second order of the hour', async () => {
    if (!redis) return;
    const cert = await peerCertificate(https.c, 'other.test');
    expect(cert.subject).toBe('CN=tunnel-relay fallback');
    const failed = await c.proc.waitForLog((l) => l.event === 'acme-order-failed' && l.name === 'other.test', 30_000);
    expect(failed).toMatchObject({ rateLimited: true, failures: 1 });
    expect(String(failed.err)).toMatch(/--acme-orders-per-hour \(1\)/);
    // Backed off until the hour's window frees a slot, not the 1-minute default.
    expect(failed.retryInMs as number).toBeGreaterThan(30 * 60_000);
    expect(await ordersTotal(metrics.c)).toMatchObject({ ok: 0, failed: 0, rate_limited: 1 });
    expect((await scrape(metrics.c, 'tunnel_relay_acme_backoff_names')).get('')).toBe(1);
    // Nothing reached the CA: the hook ran for the wildcard only.
    expect(hook.calls().filter((x) => x.action === 'set')).toHaveLength(1);
    expect((await peerCertificate(https.c, 'other.test')).subject).toBe('CN=tunnel-relay fallback');
  });

  it.skipIf(skipBrowser)("the dashboard's ACME line in Chromium: the certificate held, its next renewal, the last failure and the name backing off", async () => {
    if (!redis) return;
    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
      await loginToDashboard(page, c.controlUrl!, OPERATOR_KEY);
      const line = page.locator('#acme');
      await line.waitFor({ state: 'visible', timeout: 10_000 });
      expect(await line.locator('[data-testid=acme-certs]').textContent()).toBe('1 certificate');
      const text = (await line.textContent())!;
      expect(text).toContain('*.zone.test');
      // pebble's default lifetime is 5 years: renewal at two-thirds (less up to 5% jitter), so in more than 3 years.
      expect(await line.locator('[data-testid=acme-renewal]').textContent()).toMatch(/^next renewal \*\.zone\.test in 1[12]\d\dd \d+h \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)$/);
      expect(await line.locator('[data-testid=acme-failure]').textContent()).toMatch(/^last failure other\.test \d+(s|m \d+s) ago: over the fleet's --acme-orders-per-hour \(1\); next slot in \d+ s · retry in \d+m \d+s$/);
      expect(await line.locator('[data-testid=acme-backoff]').textContent()).toBe('1 name backing off: other.test (1×)');
      expect(text).toContain('orders 0 ok · 0 failed · 1 over the hourly ceiling');
    } finally {
      await browser.close();
    }
  });
});

// Renewal of a wildcard certificate: its own small fleet (one relay, file
// store), because the fleet above holds its one order of the hour and 5-year
// certificates. pebble issues 15 s certificates here, so `*.renew.test` is
// due at two-thirds of that; a wildcard is renewed when a name under it is
// still routed (the relay probes the route with a label of its own).
describe.skipIf(skip !== null)('ACME DNS-01: a wildcard certificate nearing expiry is renewed (file store)', () => {
  const tmp = tempDir();
  let bed: DnsHookRelay | undefined;
  let relay: RelayProc;
  let port: number;
  let origin: Origin;
  let root: string;

  beforeAll(async () => {
    bed = await startDnsHookRelay({ dir: tmp.dir, id: 'relay-renew', hostnames: ['*.renew.test'], validitySeconds: 15, relayArgs: ['--acme-handshake-wait', '60s'] });
    ({ relay, httpsPort: port } = bed);
    root = await bed.pebble.root();
    origin = await startOrigin((q, s) => s.end(`hello ${q.headers.host}`));
    await startConnector({ token: bed.token, relays: [relay.connectUrl], url: origin.url, ha: 1 });
  });
  afterAll(async () => {
    await stopAll();
    await bed?.close();
    await origin?.close();
    tmp.cleanup();
  });

  it('renewed through the hook before it expires, and served for the names under it', async () => {
    const dispatcher = new Agent({ connect: { ca: root, servername: 'x.renew.test' } });
    try {
      expect((await req(`https://127.0.0.1:${port}/`, { host: 'x.renew.test', dispatcher })).text).toBe('hello x.renew.test');
    } finally {
      await dispatcher.close();
    }
    const first = relay.proc.logs.find((l) => l.event === 'acme-issued')!;
    expect(first).toMatchObject({ name: '*.renew.test', why: 'on-demand' });
    const renewed = await relay.proc.waitForLog((l) => l.event === 'acme-issued' && l.name === '*.renew.test' && l.why === 'renewal', 30_000, 'the wildcard renewed');
    expect(renewed.fingerprint).not.toBe(first.fingerprint);
    // Ordered before the first one expired.
    const at = (l: Record<string, unknown>) => (typeof l.time === 'number' ? l.time : Date.parse(String(l.time)));
    expect(at(renewed)).toBeLessThan(Date.parse(String(first.notAfter)));
    // Both orders proved the zone through the hook.
    expect(bed!.hook.calls().filter((x) => x.action === 'set').map((x) => x.record)).toEqual(['_acme-challenge.renew.test', '_acme-challenge.renew.test']);
    for (const name of ['x.renew.test', 'y.renew.test']) {
      await waitFor(async () => (await peerCertificate(port, name)).fingerprint256 === renewed.fingerprint, 10_000, { message: `${name} served the renewed certificate` });
    }
    expect((await peerCertificate(port, 'y.renew.test')).subjectAltName).toBe('DNS:*.renew.test');
  });
});
