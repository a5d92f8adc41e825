import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { encodeRequestHead, encodeResponseHead, type RequestHead } from '@tunnel/protocol';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { createTunnel, startConnector, type Proc } from '../harness/procs.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';
import { FakeRelay, RawClient, fakeConnector, rawOrigin, serveStreams, type RelayAnswer } from './peers.js';

// Random heads from every side at a real relay and a real connector: whatever
// comes, both processes stay up and the next good request succeeds. Fixed
// seeds, bounded run counts and a time bound per pass.

const RUNS = 200;
const TIME_LIMIT_MS = 40_000;
const opts = (seed: number) => ({ seed, numRuns: RUNS, interruptAfterTimeLimit: TIME_LIMIT_MS, markInterruptAsFailure: false, endOnFailure: true });

/** Latin1 strings biased to the bytes that break HTTP: CR, LF, NUL, CTLs, DEL, colons, spaces, framing words. */
const nasty = (maxLength: number) =>
  fc
    .array(
      fc.oneof(
        { weight: 3, arbitrary: fc.constantFrom('a', 'Z', '0', '-', ' ', '\t', ':', '\r', '\n', '\r\n', '\x00', '\x01', '\x7f', '\x80', '\xff', ',', '/', '?', '#', '%') },
        { weight: 1, arbitrary: fc.constantFrom('chunked', 'Content-Length', 'Transfer-Encoding', 'Host', 'Connection', 'Upgrade', 'websocket', 'HTTP/1.1 200 OK', '5') },
        { weight: 2, arbitrary: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)) },
      ),
      { maxLength },
    )
    .map((parts) => parts.join(''));
const headerName = fc.oneof(fc.constantFrom('Content-Length', 'Transfer-Encoding', 'Connection', 'Host', 'Upgrade', 'Set-Cookie', 'X-A', 'content-length'), nasty(12));
const headerValue = fc.oneof(fc.constantFrom('0', '5', '100', 'chunked', 'close', 'Upgrade', 'websocket', 'app.test', 'xchunked'), nasty(24));
const headers = fc.array(fc.tuple(headerName, headerValue), { maxLength: 6 });

describe('head fuzz', () => {
  let fleet: Fleet;
  let origin: Awaited<ReturnType<typeof rawOrigin>>;
  let connector: Proc;
  let relayConnector: Proc;
  let fakeRelay: FakeRelay;
  let current = '';
  let evil: { answer: Buffer; body: Buffer } = { answer: Buffer.alloc(0), body: Buffer.alloc(0) };
  let closeEvil: () => void;

  beforeAll(async () => {
    origin = await rawOrigin((path) =>
      path === '/fuzz' ? { bytes: current, close: true } : { bytes: `HTTP/1.1 200 OK\r\nContent-Length: ${'alive'.length}\r\n\r\nalive` },
    );
    fleet = await startFleet({ relays: 1 });
    connector = await fleet.connector({ url: origin.url, ha: 1 });
    const token = await createTunnel({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, name: 'evil', hostnames: ['evil.test'] });
    const { session, ws } = await fakeConnector(fleet.relays[0]!.connectUrl, token);
    closeEvil = () => ws.terminate();
    serveStreams(session, (_h, s) => s.end(Buffer.concat([evil.answer, evil.body])));
    fakeRelay = await FakeRelay.start();
    relayConnector = await startConnector({ token: fleet.token, relays: [fakeRelay.url], url: origin.url, ha: 1, extraArgs: ['--no-discover'] });
    await fakeRelay.ready();
  });
  afterAll(async () => {
    closeEvil?.();
    await fakeRelay?.close();
    await fleet?.close();
    await origin?.close();
  });

  const relay = () => fleet.relays[0]!;
  const relayAlive = async () => {
    if (!relay().proc.running) throw new Error(`relay exited: ${relay().proc.stderr.slice(-2000)}`);
    if (!connector.running) throw new Error(`connector exited: ${connector.stderr.slice(-2000)}`);
    const r = await req(`${relay().publicUrl}/alive`, { host: fleet.hostname });
    if (r.text !== 'alive') throw new Error(`good request after a hostile one: ${r.status} ${r.text}`);
  };
  const report = <T,>(what: string, r: fc.RunDetails<T>) => {
    console.log(`[fuzz] ${what}: ${r.numRuns} runs${r.interrupted ? ' (time bound reached)' : ''}`);
    if (r.failed) throw new Error(fc.defaultReportMessage(r) ?? 'property failed');
    expect(r.numRuns).toBeGreaterThan(10);
  };

  it('random response heads from an origin, through the stock connector', async () => {
    const r = await fc.check(
      fc.asyncProperty(fc.oneof(fc.integer({ min: 0, max: 1100 }), fc.constantFrom(101, 204, 304, 200)), nasty(16), headers, nasty(40), async (status, reason, hs, body) => {
        current = `HTTP/1.1 ${status} ${reason}\r\n${hs.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body}`;
        await req(`${relay().publicUrl}/fuzz`, { host: fleet.hostname }).catch(() => undefined);
        await relayAlive();
      }),
      opts(9001),
    );
    report('origin response heads', r);
  });

  it('random response heads from a malicious connector', async () => {
    const r = await fc.check(
      fc.asyncProperty(fc.oneof(fc.integer({ min: 100, max: 999 }), fc.constantFrom(101, 204, 304, 200)), nasty(16), headers, nasty(40), async (status, statusText, hs, body) => {
        evil = { answer: encodeResponseHead({ status, statusText, headers: hs }), body: Buffer.from(body, 'latin1') };
        await req(`${relay().publicUrl}/fuzz`, { host: 'evil.test' }).catch(() => undefined);
        await relayAlive();
      }),
      opts(9002),
    );
    report('connector response heads', r);
  });

  it('random request heads from a raw client', async () => {
    const method = fc.oneof(fc.constantFrom('GET', 'POST', 'HEAD', 'OPTIONS', 'CONNECT', 'PUT'), nasty(8));
    const target = fc.oneof(fc.constantFrom('/', '*', '//evil.test/', 'http://evil.test/', 'http://app.test/x'), nasty(20).map((p) => `/${p}`));
    const r = await fc.check(
      fc.asyncProperty(method, target, headers, fc.boolean(), async (m, t, hs, withHost) => {
        const c = new RawClient(relay().http);
        await c.connected;
        c.send(`${m} ${t} HTTP/1.1\r\n${withHost ? 'Host: app.test\r\n' : ''}${hs.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
        // A head that announces a body we never send may be held: the bound is ours.
        await c.next({ timeoutMs: 1_500, method: m }).catch(() => undefined);
        c.close();
        await relayAlive();
      }),
      { ...opts(9003), numRuns: 150 },
    );
    report('client request heads', r);
  });

  it('random request heads from a malicious relay', async () => {
    const connectorAlive = async () => {
      if (!relayConnector.running) throw new Error(`connector exited: ${relayConnector.stderr.slice(-2000)}`);
      const a = await waitFor(() => fakeRelay.request({ path: '/alive' }), 10_000, { message: 'good request via the fake relay' });
      if (a === 'reset' || (a as RelayAnswer).body !== 'alive') throw new Error(`good request via the fake relay: ${JSON.stringify(a)}`);
    };
    const head = fc.record({
      kind: fc.constantFrom('http', 'websocket') as fc.Arbitrary<RequestHead['kind']>,
      method: fc.oneof(fc.constantFrom('GET', 'POST', 'CONNECT', 'HEAD'), nasty(8)),
      path: fc.oneof(fc.constantFrom('/', '*', '//evil.test/', 'http://evil.test/'), nasty(20)),
      host: fc.oneof(fc.constant('app.test'), nasty(12)),
      headers,
      withHost: fc.boolean(),
    });
    const r = await fc.check(
      fc.asyncProperty(head, async (h) => {
        const full: RequestHead = {
          kind: h.kind,
          method: h.method,
          path: h.path,
          host: h.host,
          scheme: 'http',
          clientIp: '203.0.113.9',
          requestId: 'fuzz',
          headers: h.withHost ? [['Host', h.host], ...h.headers] : h.headers,
        };
        await fakeRelay.send(encodeRequestHead(full), undefined, 5_000).catch(() => undefined);
        await connectorAlive();
      }),
      opts(9004),
    );
    report('relay request heads', r);
  });
});
