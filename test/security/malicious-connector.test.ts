import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeResponseHead, type RequestHead, type YamuxStream } from '@tunnel/protocol';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { createTunnel, type Proc } from '../harness/procs.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';
import { RawClient, fakeConnector, serveStreams, upgradeRequest, type ParsedResponse } from './peers.js';

// A connector is a tenant's program: the relay trusts nothing it sends. Every
// bad response head is a 502 connector_bad_response for that one request;
// a body that disagrees with its declared length cuts that one client
// connection; nothing a connector sends reaches a client as a header or a
// response of its own making, and the relay carries every other tenant on.

const FORGED = 'HTTP/1.1 200 OK\r\nX-Forged: 1\r\nContent-Length: 6\r\n\r\nforged';

type Answer = (head: RequestHead, s: YamuxStream) => void;
const head = (status: number, statusText: string, headers: Array<[string, string]> = []) => encodeResponseHead({ status, statusText, headers });
const whole =
  (status: number, statusText: string, headers: Array<[string, string]>, body = ''): Answer =>
  (_h, s) =>
    s.end(Buffer.concat([head(status, statusText, headers), Buffer.from(body, 'latin1')]));
/** Head and the first bytes now, the rest a little later: the relay is already streaming when the rest comes. */
const streamed =
  (headers: Array<[string, string]>, first: string, later: string): Answer =>
  (_h, s) => {
    s.write(Buffer.concat([head(200, 'OK', headers), Buffer.from(first, 'latin1')]));
    setTimeout(() => s.end(Buffer.from(later, 'latin1')), 150);
  };

const CASES: Record<string, Answer> = {
  '/nul-reason': whole(200, 'O\x00K', [['Content-Length', '2']], 'ok'),
  '/ctl-reason': whole(200, 'O\x01K', [['Content-Length', '2']], 'ok'),
  '/del-reason': whole(200, 'O\x7fK', [['Content-Length', '2']], 'ok'),
  '/crlf-reason': whole(200, 'OK\r\nX-Injected: 1', [['Content-Length', '2']], 'ok'),
  '/crlf-value': whole(200, 'OK', [['X-A', 'a\r\nX-Injected: 1'], ['Content-Length', '2']], 'ok'),
  '/bad-name': whole(200, 'OK', [['X A', 'a'], ['Content-Length', '2']], 'ok'),
  '/status-999': whole(999, 'Odd', [['Content-Length', '2']], 'ok'),
  '/status-100': whole(100, 'Continue', [], ''),
  '/101-plain': whole(101, 'Switching Protocols', [['Upgrade', 'websocket'], ['Connection', 'Upgrade']], FORGED),
  '/two-lengths': whole(200, 'OK', [['Content-Length', '2'], ['Content-Length', '8']], 'okokokok'),
  '/cl-te': whole(200, 'OK', [['Content-Length', '2'], ['Transfer-Encoding', 'chunked']], 'ok'),
  '/204-length': whole(204, 'No Content', [['Content-Length', '6']], 'forged'),
  '/204-body': whole(204, 'No Content', [], FORGED),
  '/304-body': whole(304, 'Not Modified', [['Content-Length', '6']], FORGED),
  '/too-long': whole(200, 'OK', [['Content-Length', '2']], `ok${FORGED}`),
  '/too-short': whole(200, 'OK', [['Content-Length', '20']], 'ok'),
  '/too-long-streamed': streamed([['Content-Length', '2']], 'o', `k${FORGED}`),
  '/too-short-streamed': streamed([['Content-Length', '20']], 'o', 'k'),
};

describe('a malicious connector', () => {
  let fleet: Fleet;
  let origin: Origin;
  let good: Proc;
  let close: () => void;

  beforeAll(async () => {
    origin = await startOrigin((q, s) => s.end(`ok ${q.url}`));
    fleet = await startFleet({ relays: 1 });
    good = await fleet.connector({ url: origin.url, ha: 1 });
    const token = await createTunnel({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, name: 'evil', hostnames: ['evil.test'] });
    const { session, ws } = await fakeConnector(fleet.relays[0]!.connectUrl, token);
    close = () => ws.terminate();
    serveStreams(session, (h, s) => {
      const path = h.path.split('?')[0]!;
      if (h.kind === 'websocket') return UPGRADES[path]!(h, s);
      (CASES[path] ?? whole(200, 'OK', [['Content-Length', '4']], 'fine'))(h, s);
    });
    await waitFor(async () => (await req(`${fleet.relays[0]!.publicUrl}/`, { host: 'evil.test' })).status === 200, 10_000, { message: 'evil tunnel routed' });
  });
  afterAll(async () => {
    close?.();
    await fleet?.close();
    await origin?.close();
  });

  const relay = () => fleet.relays[0]!;
  const bothAlive = async () => {
    expect(relay().proc.running).toBe(true);
    expect(good.running).toBe(true);
    expect((await req(`${relay().publicUrl}/alive`, { host: fleet.hostname })).text).toBe('ok /alive');
  };

  /** Case on a keep-alive connection, then a good request on the same connection. */
  async function onKeepAlive(path: string): Promise<{ first: ParsedResponse | 'closed'; second: ParsedResponse | 'closed'; raw: string }> {
    const c = new RawClient(relay().http);
    await c.connected;
    let raw = '';
    try {
      c.send(`GET ${path} HTTP/1.1\r\nHost: evil.test\r\nAccept: application/json\r\n\r\n`);
      const first = await c.next();
      if (first !== 'closed') raw += first.statusLine + JSON.stringify(first.headers) + first.body;
      if (first === 'closed' || c.closed) return { first, second: 'closed', raw: raw + c.pending };
      c.send('GET /next HTTP/1.1\r\nHost: evil.test\r\n\r\n');
      const second = await c.next();
      if (second !== 'closed') raw += second.statusLine + JSON.stringify(second.headers) + second.body;
      return { first, second, raw: raw + c.pending };
    } finally {
      c.close();
    }
  }

  const badHeads = ['/nul-reason', '/ctl-reason', '/del-reason', '/crlf-reason', '/crlf-value', '/bad-name', '/status-999', '/status-100', '/101-plain', '/two-lengths', '/cl-te', '/204-length'];
  for (const path of badHeads) {
    it(`bad response head ${path}: 502 connector_bad_response, nothing injected, the connection stays usable`, async () => {
      const r = await onKeepAlive(path);
      expect(r.first).not.toBe('closed');
      const first = r.first as ParsedResponse;
      expect(first.status).toBe(502);
      expect(first.header('tunnel-error')).toBe('connector_bad_response');
      expect(r.raw).not.toMatch(/X-Injected|X-Forged/i);
      expect(r.second).not.toBe('closed');
      expect((r.second as ParsedResponse).body).toBe('fine');
      await bothAlive();
      expect(relay().proc.logs.some((l) => l.msg === 'bad response from connector' && typeof l.reason === 'string')).toBe(true);
    });
  }

  const badBodies = ['/204-body', '/304-body', '/too-long', '/too-short', '/too-long-streamed', '/too-short-streamed'];
  for (const path of badBodies) {
    it(`body that disagrees with its head ${path}: never a forged response, never a short body on a reused connection`, async () => {
      const r = await onKeepAlive(path);
      expect(r.raw).not.toMatch(/X-Forged|forged/);
      if (r.first !== 'closed') {
        // Caught before the head went out: a clean 502; else the connection is cut.
        if (r.first.status !== 502) expect(r.second).toBe('closed');
        else expect(r.first.header('tunnel-error')).toBe('connector_bad_response');
      }
      if (r.second !== 'closed') expect(r.second.body).toBe('fine');
      await bothAlive();
    });
  }

  const UPGRADES: Record<string, Answer> = {
    '/ws-crlf-reason': whole(101, 'Switching\r\nX-Injected: 1', [['Upgrade', 'websocket'], ['Connection', 'Upgrade']]),
    '/ws-crlf-value': whole(101, 'Switching Protocols', [['Upgrade', 'websocket'], ['X-A', 'a\r\nX-Injected: 1']]),
    '/ws-nul-reason': whole(101, 'Switching\x00', [['Upgrade', 'websocket']]),
    '/ws-bad-name': whole(101, 'Switching Protocols', [['X:A', 'a'], ['Upgrade', 'websocket']]),
    '/ws-status-99': whole(199, 'Odd', []),
    '/ws-refused-too-long': whole(403, 'Forbidden', [['Content-Length', '2']], `no${FORGED}`),
  };

  for (const path of Object.keys({ '/ws-crlf-reason': 1, '/ws-crlf-value': 1, '/ws-nul-reason': 1, '/ws-bad-name': 1, '/ws-status-99': 1 })) {
    it(`bad upgrade answer ${path}: 502 connector_bad_response, nothing injected`, async () => {
      const r = await upgradeRequest(relay().http, { host: 'evil.test' }, path);
      expect(r).not.toBe('error');
      const a = r as Exclude<typeof r, 'error'>;
      expect(a.status).toBe(502);
      expect(a.headers['tunnel-error']).toBe('connector_bad_response');
      expect(a.headers['x-injected']).toBeUndefined();
      await bothAlive();
    });
  }

  it('a refused upgrade whose body runs past its length: the extra bytes never reach the client', async () => {
    const c = new RawClient(relay().http);
    await c.connected;
    c.send('GET /ws-refused-too-long HTTP/1.1\r\nHost: evil.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    const r = await c.next();
    await waitFor(() => c.closed, 5_000, { message: 'refused upgrade connection closed' });
    c.close();
    if (r !== 'closed') {
      expect(r.status).toBe(403);
      expect(r.header('connection')).toBe('close');
    }
    expect(c.pending).not.toMatch(/X-Forged|forged/);
    await bothAlive();
  });
});
