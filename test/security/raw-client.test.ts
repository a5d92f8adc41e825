import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type http from 'node:http';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import type { Proc } from '../harness/procs.js';
import { req } from '../harness/http.js';
import { RawClient, rawOnce, upgradeRequest, type ParsedResponse } from './peers.js';

// Raw bytes from anyone on the internet: request smuggling, invalid bytes,
// oversized heads, a second Host, spoofed forwarding headers and targets
// aimed at other hosts. Each is refused or neutralised for that one request;
// the origin sees only well-formed requests for its own paths, with one
// truthful client IP.

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

describe('a raw-socket client', () => {
  let fleet: Fleet;
  let origin: Origin;
  let connector: Proc;
  const seen: Seen[] = [];

  beforeAll(async () => {
    origin = await startOrigin((q, s) => {
      seen.push({ method: q.method ?? '', url: q.url ?? '', headers: q.headers });
      q.resume();
      q.on('end', () => s.end(`ok ${q.url}`));
    });
    origin.server.on('upgrade', (q: http.IncomingMessage, sock) => {
      seen.push({ method: q.method ?? '', url: q.url ?? '', headers: q.headers });
      sock.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    });
    fleet = await startFleet({ relays: 1 });
    connector = await fleet.connector({ url: origin.url, ha: 1 });
  });
  afterAll(async () => {
    await fleet?.close();
    await origin?.close();
  });

  const relay = () => fleet.relays[0]!;
  const port = () => relay().http;
  const bothAlive = async () => {
    expect(relay().proc.running).toBe(true);
    expect(connector.running).toBe(true);
    expect((await req(`${relay().publicUrl}/alive`, { host: fleet.hostname })).text).toBe('ok /alive');
  };
  const neverSeen = (path: string) => expect(seen.map((s) => s.url)).not.toContain(path);

  /** Sends `bytes` on one connection and collects every response on it until it closes. */
  async function all(bytes: string): Promise<ParsedResponse[]> {
    const c = new RawClient(port());
    await c.connected;
    c.send(bytes);
    const out: ParsedResponse[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const r = await c.next({ timeoutMs: 10_000 });
        if (r === 'closed') break;
        out.push(r);
        if (r.header('connection') === 'close') break;
      }
    } finally {
      c.close();
    }
    return out;
  }

  const WS = 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
  const SMUGGLED = 'GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n';
  const smuggling: Array<[string, string]> = [
    ['CL+TE', `POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['TE+CL', `POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['two different Content-Lengths', `POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\nContent-Length: 45\r\n\r\n${SMUGGLED}`],
    ['obs-fold Transfer-Encoding', `POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: identity\r\n chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['Transfer-Encoding: xchunked', `POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['Transfer-Encoding: chunked, identity', `POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['a space before the colon', `POST /a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${SMUGGLED}`],
  ];
  for (const [name, bytes] of smuggling) {
    it(`request smuggling (${name}): a 400, the connection closed, nothing smuggled reaches the origin`, async () => {
      const rs = await all(bytes);
      expect(rs.map((r) => r.status)).toEqual([400]);
      neverSeen('/smuggled');
      await bothAlive();
    });
  }

  const invalid: Array<[string, string, number]> = [
    ['a NUL in a header value', 'GET /nul HTTP/1.1\r\nHost: app.test\r\nX-A: a\x00b\r\n\r\n', 400],
    ['a DEL in a header value', 'GET /del HTTP/1.1\r\nHost: app.test\r\nX-A: a\x7fb\r\n\r\n', 400],
    ['a control char in the target', 'GET /ctl\x01 HTTP/1.1\r\nHost: app.test\r\n\r\n', 400],
    ['a bare LF in a header value', 'GET /lf HTTP/1.1\r\nHost: app.test\r\nX-A: a\nX-Injected: 1\r\n\r\n', 400],
    ['a header name with a space', 'GET /sp HTTP/1.1\r\nHost: app.test\r\nX A: b\r\n\r\n', 400],
    ['a head over 64 KiB', `GET /big HTTP/1.1\r\nHost: app.test\r\nX-Big: ${'a'.repeat(70 * 1024)}\r\n\r\n`, 431],
    ['over 256 header lines', `GET /many HTTP/1.1\r\nHost: app.test\r\n${Array.from({ length: 300 }, (_, i) => `X-H${i}: v\r\n`).join('')}\r\n`, 431],
  ];
  for (const [name, bytes, status] of invalid) {
    it(`${name}: ${status}, never the origin`, async () => {
      const r = await rawOnce(port(), bytes);
      expect(r).not.toBe('closed');
      expect((r as ParsedResponse).status).toBe(status);
      for (const p of ['/nul', '/del', '/ctl\x01', '/lf', '/sp', '/big', '/many']) neverSeen(p);
      await bothAlive();
    });
  }

  it('two Host headers: 400 bad_request from the relay, the connection stays usable', async () => {
    const c = new RawClient(port());
    await c.connected;
    c.send('GET /two-hosts HTTP/1.1\r\nHost: app.test\r\nHost: evil.test\r\n\r\n');
    const r = (await c.next()) as ParsedResponse;
    expect(r.status).toBe(400);
    expect(r.header('tunnel-error')).toBe('bad_request');
    c.send('GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n');
    expect(((await c.next()) as ParsedResponse).body).toBe('ok /after');
    c.close();
    neverSeen('/two-hosts');
    const u = await rawOnce(port(), `GET /ws-two-hosts HTTP/1.1\r\nHost: app.test\r\nHost: evil.test\r\n${WS}\r\n`);
    expect((u as ParsedResponse).status).toBe(400);
    neverSeen('/ws-two-hosts');
    await bothAlive();
  });

  const SPOOF = {
    'x-forwarded-for': '6.6.6.6',
    'x-forwarded-proto': 'https',
    'x-forwarded-host': 'evil.test',
    'x-forwarded-port': '1',
    forwarded: 'for=6.6.6.6;host=evil.test',
    'x-real-ip': '6.6.6.6',
    'true-client-ip': '6.6.6.6',
    'cf-connecting-ip': '6.6.6.6',
    'x-client-ip': '6.6.6.6',
    'tunnel-connecting-ip': '6.6.6.6',
    'tunnel-request-id': 'forged',
    'tunnel-anything': 'x',
    connection: 'X-Secret',
    'x-secret': 'hop',
    'proxy-authorization': 'Basic cHJveHk6c2VjcmV0',
  };
  const checkForwarding = (h: http.IncomingHttpHeaders) => {
    expect(h['x-forwarded-for']).toBe('6.6.6.6, 127.0.0.1');
    expect(h['x-forwarded-proto']).toBe('http');
    expect(h['x-forwarded-host']).toBe('app.test');
    expect(h['x-real-ip']).toBe('127.0.0.1');
    expect(h['tunnel-connecting-ip']).toBe('127.0.0.1');
    expect(h['tunnel-request-id']).not.toBe('forged');
    for (const gone of ['x-forwarded-port', 'forwarded', 'true-client-ip', 'cf-connecting-ip', 'x-client-ip', 'tunnel-anything', 'x-secret', 'proxy-authorization']) {
      expect(h[gone], gone).toBeUndefined();
    }
  };

  const spoofLines = Object.entries(SPOOF)
    .filter(([k]) => k !== 'connection')
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');

  it('spoofed forwarding headers never reach the origin; it sees one truthful client IP', async () => {
    const r = await rawOnce(port(), `GET /fwd HTTP/1.1\r\nHost: app.test\r\nConnection: X-Secret\r\n${spoofLines}\r\n`);
    expect((r as ParsedResponse).status).toBe(200);
    expect(seen.at(-1)!.url).toBe('/fwd');
    checkForwarding(seen.at(-1)!.headers);
  });

  it('the same holds for an upgrade', async () => {
    const u = await rawOnce(port(), `GET /ws-fwd HTTP/1.1\r\nHost: app.test\r\n${spoofLines}${WS.replace('Connection: Upgrade', 'Connection: Upgrade, X-Secret')}\r\n`);
    expect((u as ParsedResponse).status).toBe(101);
    const s = seen.at(-1)!;
    expect(s.url).toBe('/ws-fwd');
    checkForwarding(s.headers);
  });

  it('SSRF: an absolute-form target for another host is refused; for this host it becomes its path; //host stays a path on the origin', async () => {
    const other = await rawOnce(port(), 'GET http://evil.test/steal HTTP/1.1\r\nHost: app.test\r\n\r\n');
    expect((other as ParsedResponse).status).toBe(400);
    neverSeen('http://evil.test/steal');
    neverSeen('/steal');
    const same = await rawOnce(port(), 'GET http://app.test/mine?x=1 HTTP/1.1\r\nHost: app.test\r\n\r\n');
    expect((same as ParsedResponse).body).toBe('ok /mine?x=1');
    const dbl = await rawOnce(port(), 'GET //evil.test/x HTTP/1.1\r\nHost: app.test\r\n\r\n');
    expect((dbl as ParsedResponse).body).toBe('ok //evil.test/x');
    expect(seen.at(-1)!.headers.host).toBe('app.test');
    const ws = await upgradeRequest(port(), { host: fleet.hostname }, 'http://evil.test/ws');
    expect((ws as Exclude<typeof ws, 'error'>).status).toBe(400);
    neverSeen('http://evil.test/ws');
    await bothAlive();
  });

  it('a malformed %-escape in a control API path is a 400, not a 500', async () => {
    const r = await req(`${relay().controlUrl}/v1/tunnels/%E0%A4%A`);
    expect(r.status).toBe(400);
    expect(r.json<{ error: { code: string } }>().error.code).toBe('bad_path');
    expect(relay().proc.logs.some((l) => l.msg === 'control API error')).toBe(false);
  });
});
