import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import type http from 'node:http';
import * as path from 'node:path';
import { Agent } from 'undici';
import WebSocket, { WebSocketServer } from 'ws';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { createTunnel, startConnector, startRelay, stopAll, tempDir, type RelayProc } from './harness/procs.js';
import { hashBody, startOrigin, type Origin } from './harness/origin.js';
import { req } from './harness/http.js';
import { makeCa, issueCert, opensslMissing } from './harness/certs.js';
import { metricsUrl, scrape } from './harness/limit-metrics.js';
import { h2get, h2session } from './harness/h2.js';
import { openStore } from '../packages/relay/src/store/open.js';
import { waitFor } from './harness/wait.js';

// HTTP/2 to the public: the HTTPS listener offers h2 in ALPN (HTTP/1.1 for
// the rest, on the same port) and both reach the one request path: routing,
// forwarding headers, error pages, metrics. Driven by curl --http2 and node's
// http2 client; the browser test is in test/http2-browser.test.ts.

const skip = opensslMissing('HTTP/2 test');
let curlMissing: string | null = null;
await new Promise<void>((resolve) =>
  execFile('curl', ['--version'], (err, out) => {
    if (err || !/HTTP2/.test(out)) curlMissing = 'curl with HTTP/2 is not installed';
    resolve();
  }),
);
if (curlMissing) {
  if (process.env.CI === 'true') throw new Error(curlMissing);
  console.log(`skipping curl --http2 cases: ${curlMissing}`);
}

function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile('curl', ['-sS', '--max-time', '20', ...args], { maxBuffer: 8 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

describe.skipIf(skip !== null)('HTTP/2 on the public HTTPS listener', () => {
  const tmp = tempDir();
  let ca: ReturnType<typeof makeCa>;
  let relay: RelayProc;
  let httpsPort: number;
  let origin: Origin;
  let metrics: string;
  /** What the origin saw of the last request to /echo. */
  let seen: { host?: string; headers: http.IncomingHttpHeaders; raw: string[]; httpVersion: string } | null = null;
  let releaseSse: (() => void) | null = null;
  let storeUrl: string;

  beforeAll(async () => {
    ca = makeCa(tmp.dir);
    const leaf = issueCert(ca, path.join(tmp.dir, 'relay'), { names: ['h2.test', 'offline.test', 'denied.test'] });
    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const store = `file:${path.join(tmp.dir, 'store')}`;
    relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-h2', extraArgs: ['--tls-cert', leaf.cert, '--tls-key', leaf.key, '--https', '127.0.0.1:0', '--metrics', '127.0.0.1:0'] });
    httpsPort = (relay.proc.logs.find((l) => l.event === 'listening')!.ports as { https: number }).https;
    metrics = await metricsUrl(relay);
    origin = await startOrigin((q, s) => {
      if (q.url === '/echo') {
        seen = { host: q.headers.host, headers: q.headers, raw: q.rawHeaders, httpVersion: q.httpVersion };
        return void s.end('echo');
      }
      if (q.url === '/upload') {
        seen = { host: q.headers.host, headers: q.headers, raw: q.rawHeaders, httpVersion: q.httpVersion };
        void hashBody(q).then(({ bytes, sha256 }) => s.end(`${bytes} ${sha256}`));
        return;
      }
      if (q.url === '/sse') {
        s.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
        s.write('data: first\n\n');
        releaseSse = () => s.end('data: last\n\n');
        return;
      }
      s.end(`page ${q.url}`);
    });
    await createTunnel({ dir: tmp.dir, store, keys, name: 'offline', hostnames: ['offline.test'] });
    storeUrl = store;
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'h2', hostnames: ['h2.test', 'denied.test'], relays: [`wss://127.0.0.1:${relay.connect}`] });
    await startConnector({ token, relays: [`wss://127.0.0.1:${relay.connect}`], url: origin.url, env: { NODE_EXTRA_CA_CERTS: ca.cert }, ha: 2 });
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    tmp.cleanup();
  });

  it.skipIf(curlMissing !== null)('curl --http2: a page over h2, the origin gets HTTP/1.1 with Host and forwarding headers', async () => {
    const r = await curl(['--http2', '--cacert', ca.cert, '--resolve', `h2.test:${httpsPort}:127.0.0.1`, '-w', '\n%{http_version} %{response_code}', `https://h2.test:${httpsPort}/echo`]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('echo\n2 200');
    expect(seen).toMatchObject({ host: `h2.test:${httpsPort}`, httpVersion: '1.1' });
    expect(seen!.headers['x-forwarded-proto']).toBe('https');
    expect(seen!.headers['x-forwarded-host']).toBe(`h2.test:${httpsPort}`);
    expect(seen!.headers['x-forwarded-for']).toBe('127.0.0.1');
    // No HTTP/2 pseudo-header reaches the origin as a field.
    expect(Object.keys(seen!.headers).filter((k) => k.startsWith(':'))).toEqual([]);
  });

  it.skipIf(curlMissing !== null)('curl --http2: a 4 MiB upload arrives whole; the answer carries Tunnel-Request-Id', async () => {
    const body = randomBytes(4 << 20);
    const file = path.join(tmp.dir, 'upload.bin');
    writeFileSync(file, body);
    const r = await curl(['--http2', '--cacert', ca.cert, '--resolve', `h2.test:${httpsPort}:127.0.0.1`, '-D', '-', '--data-binary', `@${file}`, `https://h2.test:${httpsPort}/upload`]);
    expect(r.stdout).toMatch(/^HTTP\/2 200/);
    expect(r.stdout).toMatch(/^tunnel-request-id: [0-9a-f]{21}\r?$/m);
    expect(r.stdout.trim().split('\n').at(-1)).toBe(`${body.length} ${createHash('sha256').update(body).digest('hex')}`);
  });

  it('Access over h2: client-sent Tunnel-Access-* headers are dropped before the origin (as over HTTP/1.1)', async () => {
    const s = await h2session(`https://127.0.0.1:${httpsPort}`, { ca: readFileSync(ca.cert), servername: 'h2.test' });
    try {
      const r = await h2get(s, { ':path': '/echo', ':authority': 'h2.test', 'tunnel-access-jwt-assertion': 'forged', 'tunnel-access-authenticated-user-email': 'ceo@h2.test', cookie: 'a=1; tunnel_access=x' });
      expect(r.status).toBe(200);
      expect(seen!.headers['tunnel-access-jwt-assertion']).toBeUndefined();
      expect(seen!.headers['tunnel-access-authenticated-user-email']).toBeUndefined();
      expect(seen!.headers.cookie).toBe('a=1');
    } finally {
      s.close();
    }
  });

  it('split cookies are joined into one field; an h2 SSE event arrives while the response is still open', async () => {
    const s = await h2session(`https://127.0.0.1:${httpsPort}`, { ca: readFileSync(ca.cert), servername: 'h2.test' });
    try {
      const echo = await h2get(s, { ':path': '/echo', ':authority': 'h2.test', cookie: ['a=1', 'b=2'] });
      expect(echo.status).toBe(200);
      // One field (an HTTP/1.1 origin may take only the first of several Cookie lines).
      expect(seen!.raw.filter((_, i) => i % 2 === 0 && seen!.raw[i]!.toLowerCase() === 'cookie').length).toBe(1);
      expect(seen!.headers.cookie).toBe('a=1; b=2');
      expect(seen!.headers.host).toBe('h2.test');

      const stream = s.request({ ':path': '/sse', ':authority': 'h2.test', accept: 'text/event-stream' });
      const first = await new Promise<string>((resolve, reject) => {
        stream.once('data', (c: Buffer) => resolve(c.toString()));
        stream.once('error', reject);
      });
      expect(first).toBe('data: first\n\n');
      releaseSse!();
      const rest = await new Promise<string>((resolve) => {
        let t = '';
        stream.on('data', (c: Buffer) => (t += c.toString()));
        stream.once('end', () => resolve(t));
      });
      expect(rest).toBe('data: last\n\n');
    } finally {
      s.close();
    }
  });

  it('a streamed h2 upload with no content-length arrives whole: the origin gets it chunked', async () => {
    const s = await h2session(`https://127.0.0.1:${httpsPort}`, { ca: readFileSync(ca.cert), servername: 'h2.test' });
    try {
      const parts = Array.from({ length: 8 }, () => randomBytes(128 << 10));
      const h = createHash('sha256');
      for (const p of parts) h.update(p);
      const stream = s.request({ ':method': 'POST', ':path': '/upload', ':authority': 'h2.test' }, { endStream: false });
      const answer = new Promise<string>((resolve, reject) => {
        let t = '';
        stream.setEncoding('utf8');
        stream.on('data', (c: string) => (t += c));
        stream.once('end', () => resolve(t));
        stream.once('error', reject);
        setTimeout(() => reject(new Error('no answer to the upload in 15 s')), 15_000).unref();
      });
      // DATA frames until END_STREAM, no length announced (as a streamed fetch body or `curl -T -` sends it).
      stream.end(Buffer.concat(parts));
      expect(await answer).toBe(`${8 * (128 << 10)} ${h.digest('hex')}`);
      expect(seen!.headers['transfer-encoding']).toBe('chunked');
      expect(seen!.headers['content-length']).toBeUndefined();
    } finally {
      s.close();
    }
  });

  it('Access over h2: a host under a deny policy answers 403 with the same error as over HTTP/1.1', async () => {
    const store = await openStore(storeUrl);
    try {
      const route = (await store.getRoute('denied.test'))!;
      await store.putAccessRecord({ kind: 'policy', id: 'deny-h2', accountId: route.accountId, hostname: 'denied.test', pathPrefix: '/', decision: 'deny', include: { emails: [], domains: [], groups: [], serviceTokens: [] }, audTag: 'a'.repeat(32), sessionSeconds: 3600, createdAt: Date.now() });
    } finally {
      await store.close();
    }
    const dispatcher = new Agent({ connect: { ca: readFileSync(ca.cert), servername: 'h2.test' } });
    const h1 = await waitFor(async () => {
      const r = await req(`https://127.0.0.1:${httpsPort}/x`, { host: 'denied.test', dispatcher, headers: { accept: 'application/json' } });
      return r.status === 403 ? r : null;
    }, 10_000, { message: 'the deny policy applied over HTTP/1.1' });
    await dispatcher.close();
    const s = await h2session(`https://127.0.0.1:${httpsPort}`, { ca: readFileSync(ca.cert), servername: 'h2.test' });
    try {
      const before = seen;
      const h2 = await h2get(s, { ':path': '/x', ':authority': 'denied.test', accept: 'application/json' });
      expect(h2.status).toBe(403);
      expect(h2.headers['tunnel-error']).toBe(h1.headers['tunnel-error']);
      const strip = (b: string) => b.replace(/[0-9a-f]{21}/g, 'ID');
      expect(strip(h2.body)).toBe(strip(h1.text));
      expect(seen).toBe(before);
    } finally {
      s.close();
    }
  });

  it('error pages over h2: 404 for an unknown hostname, 530 for a tunnel with no connector; counted in /metrics', async () => {
    const s = await h2session(`https://127.0.0.1:${httpsPort}`, { ca: readFileSync(ca.cert), servername: 'h2.test' });
    try {
      const before = await scrape(metrics, 'tunnel_relay_requests_total');
      const unknown = await h2get(s, { ':path': '/', ':authority': 'nobody.test', accept: 'application/json' });
      expect(unknown.status).toBe(404);
      expect(unknown.headers['tunnel-error']).toBe('unknown_hostname');
      expect(JSON.parse(unknown.body).error.code).toBe('unknown_hostname');
      const offline = await h2get(s, { ':path': '/', ':authority': 'offline.test', accept: 'text/html' });
      expect(offline.status).toBe(530);
      expect(offline.headers['content-type']).toMatch(/text\/html/);
      expect(offline.body).toMatch(/offline/i);
      const after = await scrape(metrics, 'tunnel_relay_requests_total');
      const sum = (m: Map<string, number>, cls: string) => [...m].filter(([k]) => k.includes(`class=${cls}`)).reduce((a, [, v]) => a + v, 0);
      expect(sum(after, '4xx') - sum(before, '4xx')).toBe(1);
      expect(sum(after, '5xx') - sum(before, '5xx')).toBe(1);
      const sessions = await scrape(metrics, 'tunnel_relay_h2_sessions');
      expect([...sessions.values()][0]).toBeGreaterThanOrEqual(1);
    } finally {
      s.close();
    }
  });

  it('HTTP/1.1 on the same port still serves requests and WebSocket upgrades', async () => {
    const dispatcher = new Agent({ connect: { ca: readFileSync(ca.cert), servername: 'h2.test' } });
    const r = await req(`https://127.0.0.1:${httpsPort}/echo`, { host: 'h2.test', dispatcher });
    expect(r.status).toBe(200);
    expect(seen!.headers['x-forwarded-proto']).toBe('https');
    await dispatcher.close();

    const wss = new WebSocketServer({ server: origin.server });
    wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`echo ${String(m)}`)));
    try {
      const ws = new WebSocket(`wss://127.0.0.1:${httpsPort}/ws`, { headers: { host: 'h2.test' }, ca: readFileSync(ca.cert), servername: 'h2.test' } as WebSocket.ClientOptions);
      const reply = await new Promise<string>((resolve, reject) => {
        ws.once('open', () => ws.send('hi'));
        ws.once('message', (m) => resolve(String(m)));
        ws.once('error', reject);
        setTimeout(() => reject(new Error('no WebSocket reply in 10 s')), 10_000).unref();
      });
      expect(reply).toBe('echo hi');
      ws.close();
    } finally {
      wss.close();
    }
  });
});
