import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { Agent, request } from 'undici';
import { generateKeyFile } from '../../packages/relay/src/control/keys.js';
import { openStore } from '../../packages/relay/src/store/open.js';
import { createTunnel, runCli, startConnector, startRelay, stopAll, tempDir, CONNECTOR_CLI, RELAY_CLI, type Proc, type RelayProc } from '../harness/procs.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';
import { issueCert, makeCa, opensslMissing, type Ca } from '../harness/certs.js';
import { parsePromText, sumOf } from '../harness/prom-text.js';
import { peekClaims } from '@tunnel/protocol';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

// With --tls-cert/--tls-key every listener that carries a secret (connector
// endpoint, control API + dashboard, peer endpoint) and the HTTPS public
// listener speak TLS only, are advertised as https/wss, verify each other
// with the fleet CA, reload a rotated certificate without dropping a
// connection, and `tunnel login` works against a private CA.

const missing = opensslMissing('TLS listener tests');
const OPERATOR_KEY = 'tls-listeners-operator-key-0123';

/** TLS handshake to 127.0.0.1:port trusting `ca`; resolves with the served certificate's fingerprint. */
function handshake(port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      const fp = s.getPeerCertificate().fingerprint256;
      s.end();
      resolve(fp);
    });
    s.once('error', reject);
    s.setTimeout(5_000, () => s.destroy(new Error('handshake timeout')));
  });
}

/** An HTTP/1.1 keep-alive connection over TLS, to send requests one at a time on the same socket. */
class KeepAliveTls {
  private buf = '';
  private waiter: (() => void) | null = null;
  constructor(readonly socket: tls.TLSSocket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buf += d;
      this.waiter?.();
    });
  }
  static open(port: number, ca: Buffer): Promise<KeepAliveTls> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca, servername: 'secure.test' }, () => resolve(new KeepAliveTls(s)));
      s.once('error', reject);
    });
  }
  get fingerprint(): string {
    return this.socket.getPeerCertificate().fingerprint256;
  }
  /** One GET; resolves with the body once Content-Length bytes arrived. */
  async get(pathname: string, host: string): Promise<string> {
    this.buf = '';
    this.socket.write(`GET ${pathname} HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\n\r\n`);
    return waitFor(
      () => {
        const end = this.buf.indexOf('\r\n\r\n');
        if (end < 0) return null;
        const len = Number(/content-length: (\d+)/i.exec(this.buf.slice(0, end))?.[1] ?? NaN);
        const body = this.buf.slice(end + 4);
        if (this.socket.destroyed) throw new Error('connection closed');
        return body.length >= len ? `${this.buf.slice(0, this.buf.indexOf('\r\n'))} ${body}` : null;
      },
      10_000,
      { message: `response to ${pathname} on the open connection` },
    );
  }
}

describe.skipIf(missing !== null)('TLS on every listener', () => {
  const tmp = tempDir();
  let ca: Ca;
  let caPem: Buffer;
  const store = `file:${path.join(tmp.dir, 'store')}`;
  const keys = path.join(tmp.dir, 'fleet-key.json');
  let a: RelayProc;
  let b: RelayProc;
  let httpsA: number;
  let httpsB: number;
  let origin: Origin;
  let connector: Proc;
  let tunnelId: string;
  // Relay A reads its certificate files directly (rotated by rename: the file-change reload);
  // relay B through symlinks into another directory (rewritten there: only SIGHUP sees it).
  const certA = path.join(tmp.dir, 'a', 'relay.pem');
  const keyA = path.join(tmp.dir, 'a', 'relay.key');
  const certB = path.join(tmp.dir, 'b', 'relay.pem');
  const keyB = path.join(tmp.dir, 'b', 'relay.key');
  const realB = path.join(tmp.dir, 'b-real');

  const httpsPort = (r: RelayProc) => (r.proc.logs.find((l) => l.event === 'listening')!.ports as { https: number }).https;

  beforeAll(async () => {
    for (const d of ['a', 'b', 'b-real', 'ca', 'home1', 'home2']) mkdirSync(path.join(tmp.dir, d));
    ca = makeCa(path.join(tmp.dir, 'ca'));
    caPem = readFileSync(ca.cert);
    const leafA = issueCert(ca, path.join(tmp.dir, 'a', 'relay'), { names: ['secure.test'] });
    expect(leafA.cert).toBe(certA);
    const leafB = issueCert(ca, path.join(realB, 'relay'), { names: ['secure.test'] });
    symlinkSync(leafB.cert, certB);
    symlinkSync(leafB.key, keyB);
    generateKeyFile(keys);
    writeFileSync(path.join(tmp.dir, 'operator-key'), OPERATOR_KEY);
    const tlsArgs = (cert: string, key: string) => ['--tls-cert', cert, '--tls-key', key, '--tls-ca', ca.cert, '--https', '127.0.0.1:0', '--operator-key-file', path.join(tmp.dir, 'operator-key')];
    a = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-a', extraArgs: tlsArgs(certA, keyA) });
    b = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-b', extraArgs: [...tlsArgs(certB, keyB), '--metrics', '127.0.0.1:0'] });
    httpsA = httpsPort(a);
    httpsB = httpsPort(b);
    origin = await startOrigin((q, s) => s.end(`secure ${q.headers['x-forwarded-proto']} ${q.url}`));
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'secure', hostnames: ['secure.test'], relays: [`wss://127.0.0.1:${a.connect}`] });
    tunnelId = String(peekClaims(token)!.tunnelId);
    // Only on relay A: relay B serves the hostname by forwarding to A's peer endpoint.
    connector = await startConnector({ token, relays: [`wss://127.0.0.1:${a.connect}`], url: origin.url, ha: 2, extraArgs: ['--no-discover', '--ca-file', ca.cert] });
    // Relay B forwards once it has seen A's presence for the tunnel.
    const dispatcher = new Agent({ connect: { ca: caPem, servername: 'secure.test' } });
    await waitFor(async () => (await req(`https://127.0.0.1:${httpsB}/ready`, { host: 'secure.test', dispatcher })).status === 200, 15_000, { message: 'relay B forwards to relay A' });
    await dispatcher.close();
  }, 60_000);
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    tmp.cleanup();
  });

  it('connect, control, peer and HTTPS listeners answer TLS only, with the relay certificate', async () => {
    const want = new X509Certificate(readFileSync(certA)).fingerprint256;
    for (const port of [a.connect, a.control!, a.peer!, httpsA]) expect(await handshake(port, caPem)).toBe(want);
    // Plain HTTP to the control API or the peer endpoint gets no answer (the TLS server drops it).
    for (const port of [a.control!, a.peer!]) {
      await expect(request(`http://127.0.0.1:${port}/healthz`, { headersTimeout: 5_000 }).then((r) => r.body.text())).rejects.toThrow();
    }
  });

  it('advertises https:// and wss:// in /v1/relays and the fleet membership (peer endpoint included)', async () => {
    const dispatcher = new Agent({ connect: { ca: caPem } });
    const r = await req(`https://127.0.0.1:${a.control}/v1/relays`, { dispatcher });
    await dispatcher.close();
    const relays = r.json<{ relays: Array<{ id: string; connectUrl: string; controlUrl: string }> }>().relays;
    expect(relays.map((x) => x.id).sort()).toEqual(['relay-a', 'relay-b']);
    for (const x of relays) {
      expect(x.connectUrl).toMatch(/^wss:\/\/127\.0\.0\.1:\d+$/);
      expect(x.controlUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    }
    const s = await openStore(store);
    try {
      const members = await s.listRelays();
      expect(members.map((m) => m.peerUrl).every((u) => u.startsWith('https://127.0.0.1:'))).toBe(true);
    } finally {
      await s.close();
    }
  });

  it('a request to relay B is forwarded over TLS to relay A (verified with the fleet CA)', async () => {
    const dispatcher = new Agent({ connect: { ca: caPem, servername: 'secure.test' } });
    const r = await req(`https://127.0.0.1:${httpsB}/fwd`, { host: 'secure.test', dispatcher });
    await dispatcher.close();
    expect(r.status).toBe(200);
    expect(r.text).toBe('secure https /fwd');
  });

  it('a relay with certificates never forwards to a peer that advertises plain http://', async () => {
    // A member record naming a plain peer endpoint that claims to hold the tunnel (an old or
    // misconfigured relay, or a forged record): forwarding it the request would send it in clear.
    const hits: string[] = [];
    const plainPeer = http.createServer((q, s) => {
      hits.push(`${q.method} ${q.url}`);
      s.end('plain peer');
    });
    await new Promise<void>((r) => plainPeer.listen(0, '127.0.0.1', r));
    const peerUrl = `http://127.0.0.1:${(plainPeer.address() as AddressInfo).port}`;
    const s = await openStore(store);
    const dispatcher = new Agent({ connect: { ca: caPem, servername: 'secure.test' } });
    try {
      const now = Date.now();
      await s.heartbeatRelay({ id: 'relay-plain', region: 'x', controlUrl: '', connectUrl: 'ws://127.0.0.1:1', publicUrl: '', peerUrl, startedAt: now, lastSeen: now, draining: false }, 60_000);
      await s.putPresence('relay-plain', [{ connectionId: 'c-plain', relayId: 'relay-plain', tunnelId, connectorId: 'x', connIndex: 0, version: '0', clientIp: '127.0.0.1', connectedAt: now }], 60_000);
      // Relay B refreshes its fleet view every 2 s: requests over 5 s (bounded) all go to relay A.
      const until = Date.now() + 5_000;
      let n = 0;
      while (Date.now() < until && n < 2_000) {
        const r = await req(`https://127.0.0.1:${httpsB}/n${n++}`, { host: 'secure.test', dispatcher });
        expect(r.text).toMatch(/^secure https \/n\d+$/);
      }
      expect(hits).toEqual([]);
    } finally {
      await s.removeRelay('relay-plain');
      await s.close();
      await dispatcher.close();
      plainPeer.closeAllConnections();
      await new Promise((r) => plainPeer.close(r));
    }
  });

  it('the dashboard (over TLS) gets fleet stats from the other relay over https, verified with the fleet CA', async () => {
    const dispatcher = new Agent({ connect: { ca: caPem } });
    const base = `https://127.0.0.1:${b.control}`;
    const login = await request(`${base}/dashboard/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: base },
      body: new URLSearchParams({ key: OPERATOR_KEY }).toString(),
      dispatcher,
    });
    await login.body.dump();
    expect(login.statusCode).toBe(303);
    const setCookie = String(login.headers['set-cookie']);
    expect(setCookie).toMatch(/; Secure/i);
    const cookie = setCookie.split(';')[0]!;
    const state = await waitFor(
      async () => {
        const r = await req(`${base}/dashboard/api/state`, { headers: { cookie }, dispatcher });
        const relays = r.json<{ relays: Array<{ id: string; stats: boolean }> }>().relays;
        return relays.find((x) => x.id === 'relay-a')?.stats ? relays : null;
      },
      15_000,
      { message: 'relay B dashboard shows relay A stats' },
    );
    expect(state.map((x) => x.id)).toContain('relay-a');
    await dispatcher.close();
  });

  it('`tunnel login --relay https://…` works with a private CA (--ca-file, saved for later commands; NODE_EXTRA_CA_CERTS)', async () => {
    // Reusable: this one token logs in twice below (enrollment tokens are single use by default).
    const enroll = await runCli(RELAY_CLI, ['account', 'create', 'alice', '--reusable', '--store', store, '--keys', keys], {}, tmp.dir);
    expect(enroll.code).toBe(0);
    const token = enroll.stdout.trim();
    const relayUrl = `https://127.0.0.1:${a.control}`;
    const home1 = path.join(tmp.dir, 'home1');
    const untrusted = await runCli(CONNECTOR_CLI, ['login', '--relay', relayUrl, '--enroll', token], { TUNNEL_HOME: home1, NODE_EXTRA_CA_CERTS: '' });
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toMatch(/not trusted here: pass --ca-file/);
    const trusted = await runCli(CONNECTOR_CLI, ['login', '--relay', relayUrl, '--enroll', token, '--ca-file', ca.cert], { TUNNEL_HOME: home1 });
    expect(trusted.stderr).toBe('');
    expect(trusted.code).toBe(0);
    expect(JSON.parse(readFileSync(path.join(home1, 'cert.json'), 'utf8')).caFile).toBe(ca.cert);
    // Later commands reuse the CA login saved; the credentials they get name https/wss endpoints.
    const created = await runCli(CONNECTOR_CLI, ['create', 'web', '--output', 'json'], { TUNNEL_HOME: home1 });
    expect(created.stderr).toBe('');
    const creds = JSON.parse(readFileSync(JSON.parse(created.stdout).credentialsFile, 'utf8'));
    expect(creds.controlUrl).toBe(relayUrl);
    expect(creds.relays.every((u: string) => u.startsWith('wss://'))).toBe(true);
    const viaEnv = await runCli(CONNECTOR_CLI, ['login', '--relay', relayUrl, '--enroll', token], { TUNNEL_HOME: path.join(tmp.dir, 'home2'), NODE_EXTRA_CA_CERTS: ca.cert });
    expect(viaEnv.code).toBe(0);
  });

  it('without certificates, a non-loopback control/peer/connect address is refused unless --insecure-http-control', async () => {
    const r = await runCli(
      RELAY_CLI,
      ['serve', '--id', 'relay-plain', '--store', store, '--keys', keys, '--http', '127.0.0.1:0', '--connect', '127.0.0.1:0', '--control', '0.0.0.0:0', '--peer', 'off', '--log-format', 'json'],
      {},
      tmp.dir,
      15_000,
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--control 0\.0\.0\.0:0: a non-loopback address without TLS .*--insecure-http-control/);
  });

  /** New handshakes get `next`'s certificate; `open` (and the connector's wss connections) stay up on the old one. */
  async function expectRotated(port: number, open: KeepAliveTls, oldFp: string, nextCert: string, lostBefore: number): Promise<void> {
    const want = new X509Certificate(readFileSync(nextCert)).fingerprint256;
    expect(want).not.toBe(oldFp);
    expect(await handshake(port, caPem)).toBe(want);
    expect(await open.get('/after', 'secure.test')).toMatch(/^HTTP\/1\.1 200 .*secure https \/after$/);
    expect(open.fingerprint).toBe(oldFp);
    expect(connector.countLogs((l) => l.event === 'lost')).toBe(lostBefore);
  }

  it('a certificate replaced on disk is served to new handshakes at once; open connections survive', async () => {
    const open = await KeepAliveTls.open(httpsA, caPem);
    expect(await open.get('/before', 'secure.test')).toMatch(/200 .*secure https \/before$/);
    const oldFp = open.fingerprint;
    const lost = connector.countLogs((l) => l.event === 'lost');
    // What certificate tools do: write new files beside the old, rename over them.
    const next = issueCert(ca, path.join(tmp.dir, 'a', 'next'), { cn: 'rotated-a', names: ['secure.test'] });
    renameSync(next.key, keyA);
    renameSync(next.cert, certA);
    const line = await a.proc.waitForLog((l) => l.event === 'tls-reloaded' && l.trigger === 'file-change' && l.changed === true, 10_000);
    expect(line.fingerprint).toBe(new X509Certificate(readFileSync(certA)).fingerprint256);
    await expectRotated(httpsA, open, oldFp, certA, lost);
    await expectRotated(a.control!, open, oldFp, certA, lost);
    open.socket.destroy();
  });

  it('SIGHUP reloads a certificate the file watch cannot see, without stopping the relay or dropping connections', async () => {
    const open = await KeepAliveTls.open(httpsB, caPem);
    expect(await open.get('/before', 'secure.test')).toMatch(/200 .*secure https \/before$/);
    const oldFp = open.fingerprint;
    const lost = connector.countLogs((l) => l.event === 'lost');
    // Rewritten behind the symlinks: relay B watches the directory of the links, not this one.
    const next = issueCert(ca, path.join(tmp.dir, 'next-b'), { cn: 'rotated-b', names: ['secure.test'] });
    copyFileSync(next.key, path.join(realB, 'relay.key'));
    copyFileSync(next.cert, path.join(realB, 'relay.pem'));
    b.proc.signal('SIGHUP');
    const line = await b.proc.waitForLog((l) => l.event === 'tls-reloaded' && l.trigger === 'SIGHUP', 10_000);
    expect(line.changed).toBe(true);
    expect(b.proc.running).toBe(true);
    await expectRotated(httpsB, open, oldFp, next.cert, lost);
    await expectRotated(b.peer!, open, oldFp, next.cert, lost);
    open.socket.destroy();
    // A half-written rotation (a key that is not the certificate's) is refused; the running certificate stays.
    writeFileSync(path.join(realB, 'relay.key'), readFileSync(path.join(tmp.dir, 'a', 'relay.key')));
    b.proc.signal('SIGHUP');
    await b.proc.waitForLog((l) => l.event === 'tls-reload-failed' && l.trigger === 'SIGHUP', 10_000);
    expect(await handshake(httpsB, caPem)).toBe(new X509Certificate(readFileSync(next.cert)).fingerprint256);
    // /metrics: one reload served, one refused, and the expiry of the certificate now served.
    const metricsPort = (await b.proc.waitForLog((l) => l.event === 'metrics-listening')).port as number;
    const fams = parsePromText((await req(`http://127.0.0.1:${metricsPort}/metrics`)).text);
    expect(sumOf(fams, 'tunnel_relay_tls_reloads_total', { result: 'ok' })).toBe(1);
    expect(sumOf(fams, 'tunnel_relay_tls_reloads_total', { result: 'failed' })).toBe(1);
    expect(sumOf(fams, 'tunnel_relay_tls_certificate_expiry_timestamp_seconds')).toBe(Math.floor(Date.parse(new X509Certificate(readFileSync(next.cert)).validTo) / 1000));
  });
});
