import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import * as path from 'node:path';
import { Agent } from 'undici';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { createTunnel, runCli, startConnector, startRelay, stopAll, tempDir, RELAY_CLI, type RelayProc } from './harness/procs.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { req } from './harness/http.js';
import { makeCa, issueCert, opensslMissing, type Ca } from './harness/certs.js';
import { metricsUrl, scrape } from './harness/limit-metrics.js';
import { freePort } from './harness/ports.js';
import { ordersTotal, peerCertificate } from './harness/acme-peer.js';
import { startDns, type TestDns } from './harness/dns.js';
import { pebbleMissing, startPebble, type Pebble } from './harness/pebble.js';
import { startRedis, type RedisServer } from './harness/redis.js';
import { waitFor } from './harness/wait.js';

// Certificates per hostname from a real ACME CA (Debian's pebble, on
// 127.0.0.1, resolving test names through the harness's DNS server):
// ordered at the first TLS handshake for a routed name only, proven by
// HTTP-01 on the relay's public HTTP listener or TLS-ALPN-01 on its HTTPS
// one, kept in the fleet store so a second relay serves what the first
// ordered, renewed at two-thirds of their life, and backed off after a failure.

const skip = opensslMissing('ACME test') ?? pebbleMissing('ACME test');

describe.skipIf(skip !== null)('ACME: HTTP-01, unrouted names, back-off (file store)', () => {
  const tmp = tempDir();
  let ca: Ca;
  let dns: TestDns;
  let pebble: Pebble;
  let relay: RelayProc;
  let origin: Origin;
  let metrics: string;
  let httpsPort: number;
  let fallback: { cert: string; key: string };
  let root: string;

  beforeAll(async () => {
    ca = makeCa(tmp.dir);
    fallback = issueCert(ca, path.join(tmp.dir, 'fallback'), { names: ['fallback.test'] });
    dns = await startDns();
    dns.a.set('h01.test', '127.0.0.1');
    // fail.test is routed but resolves nowhere: its validation fails.
    const [httpPort, tlsPort] = [await freePort(), await freePort()];
    httpsPort = tlsPort;
    pebble = await startPebble({ dir: tmp.dir, ca, dnsPort: dns.port, httpPort, tlsPort });
    root = await pebble.root();
    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const store = `file:${path.join(tmp.dir, 'store')}`;
    origin = await startOrigin((q, s) => s.end(`hello ${q.headers.host}`));
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'acme', hostnames: ['h01.test', 'fail.test'] });
    relay = await startRelay({
      dir: tmp.dir,
      store,
      keys,
      id: 'relay-acme',
      ports: { http: httpPort },
      env: { NODE_EXTRA_CA_CERTS: ca.cert },
      extraArgs: ['--tls-cert', fallback.cert, '--tls-key', fallback.key, '--https', `127.0.0.1:${tlsPort}`, '--metrics', '127.0.0.1:0',
        '--acme-directory', pebble.directory, '--acme-email', 'ops@example.com', '--acme-retry-after', '10m'],
    });
    metrics = await metricsUrl(relay);
    await startConnector({ token, relays: [`wss://127.0.0.1:${relay.connect}`], url: origin.url, env: { NODE_EXTRA_CA_CERTS: ca.cert }, ha: 1 });
  });
  afterAll(async () => {
    await stopAll();
    await pebble?.stop();
    await dns?.close();
    await origin?.close();
    tmp.cleanup();
  });

  it('the first handshake for a routed name orders its certificate over HTTP-01; the page is served with it, trusted by the CA root', async () => {
    const dispatcher = new Agent({ connect: { ca: root, servername: 'h01.test' } });
    const r = await req(`https://127.0.0.1:${httpsPort}/`, { host: 'h01.test', dispatcher });
    await dispatcher.close();
    expect(r.status).toBe(200);
    expect(r.text).toBe('hello h01.test');
    const issued = relay.proc.logs.find((l) => l.event === 'acme-issued' && l.name === 'h01.test')!;
    expect(issued).toMatchObject({ why: 'on-demand' });
    expect(await ordersTotal(metrics)).toMatchObject({ ok: 1, failed: 0 });
    // pebble resolved the name and validated over HTTP-01 against the relay's HTTP port.
    expect(dns.queries).toContain('h01.test');
    const cert = await peerCertificate(httpsPort, 'h01.test');
    expect(cert.subjectAltName).toBe('DNS:h01.test');
    expect(cert.fingerprint256).toBe(issued.fingerprint);
    expect(cert.issuer).toMatch(/Pebble/);
  });

  it('later handshakes are answered from memory: the same certificate, no second order', async () => {
    for (let i = 0; i < 3; i++) expect((await peerCertificate(httpsPort, 'h01.test')).subjectAltName).toBe('DNS:h01.test');
    expect(relay.proc.countLogs((l) => l.event === 'acme-order')).toBe(1);
    expect((await scrape(metrics, 'tunnel_relay_acme_certificates')).get('')).toBe(1);
  });

  it('an unrouted name gets no order: the fallback certificate and a 404', async () => {
    const cert = await peerCertificate(httpsPort, 'nobody.test');
    expect(cert.fingerprint256).toBe(new X509Certificate(readFileSync(fallback.cert)).fingerprint256);
    // Its certificate was checked above; the fallback does not name nobody.test.
    const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
    const r = await req(`https://127.0.0.1:${httpsPort}/`, { host: 'nobody.test', dispatcher, headers: { accept: 'application/json' } });
    await dispatcher.close();
    expect(r.status).toBe(404);
    expect(r.header('tunnel-error')).toBe('unknown_hostname');
    expect(relay.proc.countLogs((l) => l.event === 'acme-order' && l.name === 'nobody.test')).toBe(0);
    expect(dns.queries).not.toContain('nobody.test');
    expect(await ordersTotal(metrics)).toMatchObject({ ok: 1, failed: 0 });
  });

  it('a failed order backs off: the fallback certificate meanwhile, no second order, visible in /metrics', async () => {
    const first = await peerCertificate(httpsPort, 'fail.test');
    expect(first.fingerprint256).toBe(new X509Certificate(readFileSync(fallback.cert)).fingerprint256);
    const failed = await relay.proc.waitForLog((l) => l.event === 'acme-order-failed' && l.name === 'fail.test', 30_000);
    expect(failed).toMatchObject({ failures: 1, retryInMs: 600_000 });
    expect(await ordersTotal(metrics)).toMatchObject({ ok: 1, failed: 1 });
    expect((await scrape(metrics, 'tunnel_relay_acme_backoff_names')).get('')).toBe(1);
    // Within the back-off: handshakes get the fallback at once, and nothing is ordered.
    for (let i = 0; i < 3; i++) expect((await peerCertificate(httpsPort, 'fail.test')).fingerprint256).toBe(first.fingerprint256);
    expect(relay.proc.countLogs((l) => l.event === 'acme-order' && l.name === 'fail.test')).toBe(1);
    expect(await ordersTotal(metrics)).toMatchObject({ ok: 1, failed: 1 });
  });
});

describe.skipIf(skip !== null)('ACME in a Redis fleet: TLS-ALPN-01, one order for two relays, renewal', () => {
  const tmp = tempDir();
  let ca: Ca;
  let dns: TestDns;
  let pebble: Pebble;
  let redis: RedisServer | null;
  let b: RelayProc;
  let c: RelayProc;
  const https = { b: 0, c: 0 };
  const metrics = { b: '', c: '' };
  let origin: Origin;
  let root: string;

  beforeAll(async () => {
    redis = await startRedis();
    if (!redis) return;
    ca = makeCa(tmp.dir);
    const fallback = issueCert(ca, path.join(tmp.dir, 'fallback'), { names: ['fallback.test'] });
    dns = await startDns();
    dns.a.set('alpn.test', '127.0.0.1');
    https.b = await freePort();
    https.c = await freePort();
    // pebble validates against relay B's HTTPS port only; relay C orders. Certificates live 24 s.
    pebble = await startPebble({ dir: tmp.dir, ca, dnsPort: dns.port, httpPort: await freePort(), tlsPort: https.b, validitySeconds: 24 });
    root = await pebble.root();
    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const store = redis.url;
    origin = await startOrigin((q, s) => s.end(`hello ${q.headers.host}`));
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'alpn', hostnames: ['alpn.test'] });
    const start = (id: string, port: number) =>
      startRelay({
        dir: tmp.dir,
        store,
        keys,
        id,
        env: { NODE_EXTRA_CA_CERTS: ca.cert },
        extraArgs: ['--tls-cert', fallback.cert, '--tls-key', fallback.key, '--https', `127.0.0.1:${port}`, '--metrics', '127.0.0.1:0',
          '--acme-directory', pebble.directory, '--acme-email', 'ops@example.com', '--acme-challenge', 'tls-alpn-01'],
      });
    b = await start('relay-b', https.b);
    c = await start('relay-c', https.c);
    metrics.b = await metricsUrl(b);
    metrics.c = await metricsUrl(c);
    await startConnector({ token, relays: [`wss://127.0.0.1:${b.connect}`, `wss://127.0.0.1:${c.connect}`], url: origin.url, env: { NODE_EXTRA_CA_CERTS: ca.cert }, ha: 2 });
  });
  afterAll(async () => {
    await stopAll();
    await pebble?.stop();
    await dns?.close();
    await redis?.stop();
    await origin?.close();
    tmp.cleanup();
  });

  it('relay C orders over TLS-ALPN-01, validated on relay B (challenge shared through Redis); B then serves the same certificate without ordering', async () => {
    if (!redis) return;
    const dispatcher = new Agent({ connect: { ca: root, servername: 'alpn.test' } });
    const r = await req(`https://127.0.0.1:${https.c}/`, { host: 'alpn.test', dispatcher });
    expect(r.status).toBe(200);
    expect(r.text).toBe('hello alpn.test');
    const issued = c.proc.logs.find((l) => l.event === 'acme-issued' && l.name === 'alpn.test')!;
    expect(issued).toBeDefined();
    // B saw the certificate come in through the store, and serves it.
    await b.proc.waitForLog((l) => l.event === 'certificate-loaded' && l.name === 'alpn.test' && l.orderedBy === 'relay-c', 10_000);
    expect((await peerCertificate(https.b, 'alpn.test')).fingerprint256).toBe(issued.fingerprint);
    const viaB = await req(`https://127.0.0.1:${https.b}/`, { host: 'alpn.test', dispatcher });
    expect(viaB.text).toBe('hello alpn.test');
    await dispatcher.close();
    expect(await ordersTotal(metrics.c)).toMatchObject({ ok: 1 });
    expect(await ordersTotal(metrics.b)).toMatchObject({ ok: 0, failed: 0 });
    // Only a client offering acme-tls/1 ever gets a challenge certificate; h2 clients get the real one.
    expect((await peerCertificate(https.b, 'alpn.test', ['h2'])).fingerprint256).toBe(issued.fingerprint);
  });

  it('renews at two-thirds of the lifetime: one order for the fleet, both relays serve the new certificate', async () => {
    if (!redis) return;
    const first = c.proc.logs.find((l) => l.event === 'acme-issued' && l.name === 'alpn.test')!;
    const renewed = await waitFor(
      () => [...b.proc.logs, ...c.proc.logs].find((l) => l.event === 'acme-issued' && l.name === 'alpn.test' && l.why === 'renewal'),
      40_000,
      { message: 'a renewal' },
    );
    expect(renewed.fingerprint).not.toBe(first.fingerprint);
    for (const port of [https.b, https.c]) {
      await waitFor(async () => (await peerCertificate(port, 'alpn.test')).fingerprint256 === renewed.fingerprint, 10_000, { message: `port ${port} serves the renewed certificate` });
    }
    // The lock: one renewal order between the two relays.
    expect([...b.proc.logs, ...c.proc.logs].filter((l) => l.event === 'acme-order' && l.name === 'alpn.test' && l.why === 'renewal').length).toBe(1);
  });
});

describe('ACME settings: a wrong one stops start-up naming the flag or file:line', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  const store = `file:${path.join(tmp.dir, 'store')}`;
  const base = ['serve', '--store', store, '--keys', keys, '--http', '127.0.0.1:0', '--connect', '127.0.0.1:0', '--control', 'off', '--peer', 'off'];
  beforeAll(() => generateKeyFile(keys));
  afterAll(() => tmp.cleanup());

  it('--acme-directory without --acme-email, or without --https, is refused with the reason', async () => {
    const noEmail = await runCli(RELAY_CLI, [...base, '--https', '127.0.0.1:0', '--acme-directory', 'https://127.0.0.1:1/dir'], {}, tmp.dir, 15_000);
    expect(noEmail.code).toBe(1);
    expect(noEmail.stderr).toMatch(/--acme-directory needs --acme-email/);
    const noHttps = await runCli(RELAY_CLI, [...base, '--acme-directory', 'https://127.0.0.1:1/dir', '--acme-email', 'ops@example.com'], {}, tmp.dir, 15_000);
    expect(noHttps.code).toBe(1);
    expect(noHttps.stderr).toMatch(/--acme-directory needs the public --https listener/);
  });

  it('the DNS hook time limit: a bare number is refused naming the flag, or relay.yml\'s file, line and key', async () => {
    const hook = ['--https', '127.0.0.1:0', '--acme-directory', 'https://127.0.0.1:1/dir', '--acme-email', 'ops@example.com', '--acme-challenge', 'dns-01', '--acme-dns-hook', '/bin/true'];
    const flag = await runCli(RELAY_CLI, [...base, ...hook, '--acme-dns-hook-timeout', '30'], {}, tmp.dir, 15_000);
    expect(flag.code).toBe(1);
    expect(flag.stderr).toMatch(/--acme-dns-hook-timeout: /);
    const file = path.join(tmp.dir, 'relay-hook.yml');
    writeFileSync(file, 'acme:\n  directory: https://127.0.0.1:1/dir\n  email: ops@example.com\n  dns-hook: /bin/true\n  dns-hook-timeout: 30\n');
    const r = await runCli(RELAY_CLI, [...base, '--config', file], {}, tmp.dir, 15_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${file}:5:`);
    expect(r.stderr).toMatch(/acme\.dns-hook-timeout/);
  });

  it('relay.yml acme: with a bad email names the file, line and key', async () => {
    const file = path.join(tmp.dir, 'relay.yml');
    writeFileSync(file, 'region: x\nacme:\n  directory: https://127.0.0.1:1/dir\n  email: not-an-address\n');
    const r = await runCli(RELAY_CLI, [...base, '--config', file], {}, tmp.dir, 15_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${file}:4:`);
    expect(r.stderr).toMatch(/acme\.email/);
  });
});
