import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFleet, type Fleet } from '../harness/fleet.js';
import type { Proc } from '../harness/procs.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';
import { RawClient, rawOrigin, upgradeRequest, type ParsedResponse } from './peers.js';

// An origin is whatever the tenant runs; through the stock connector nothing
// it writes may take the connector or the relay down, reach the client as an
// injected header or a forged response, or leave a short body on a reused
// client connection.

const FORGED = 'HTTP/1.1 200 OK\r\nX-Forged: 1\r\nContent-Length: 6\r\n\r\nforged';
const ok = (body: string) => `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`;

const ANSWERS: Record<string, { bytes: string; close?: boolean }> = {
  '/nul-reason': { bytes: 'HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok' },
  '/ctl-reason': { bytes: 'HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok' },
  '/del-reason': { bytes: 'HTTP/1.1 200 O\x7fK\r\nContent-Length: 2\r\n\r\nok' },
  '/cr-reason': { bytes: 'HTTP/1.1 200 O\rX-Injected: 1\r\nContent-Length: 2\r\n\r\nok' },
  '/ctl-value': { bytes: 'HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\nok' },
  '/del-value': { bytes: 'HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\nContent-Length: 2\r\n\r\nok' },
  '/lf-value': { bytes: 'HTTP/1.1 200 OK\r\nX-A: a\nX-Injected: 1\r\nContent-Length: 2\r\n\r\nok', close: true },
  '/two-lengths': { bytes: 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 8\r\n\r\nokokokok', close: true },
  '/cl-te': { bytes: `HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n${FORGED}`, close: true },
  '/too-long': { bytes: `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok${FORGED}`, close: true },
  '/too-short': { bytes: 'HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nok', close: true },
  '/101-plain': { bytes: `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n${FORGED}`, close: true },
  '/204-body': { bytes: `HTTP/1.1 204 No Content\r\n\r\n${FORGED}`, close: true },
  '/304-body': { bytes: `HTTP/1.1 304 Not Modified\r\nContent-Length: 6\r\n\r\n${FORGED}`, close: true },
  '/status-1000': { bytes: 'HTTP/1.1 1000 Odd\r\nContent-Length: 2\r\n\r\nok', close: true },
  '/ws-ctl-reason': { bytes: 'HTTP/1.1 101 Switching\x01\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n', close: true },
  '/ws-del-value': { bytes: 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-A: \x7f\r\n\r\n', close: true },
  '/ws-refused-long': { bytes: `HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno${FORGED}`, close: true },
};

describe('an origin that speaks broken HTTP, through the stock connector', () => {
  let fleet: Fleet;
  let origin: Awaited<ReturnType<typeof rawOrigin>>;
  let connector: Proc;

  beforeAll(async () => {
    origin = await rawOrigin((path) => ANSWERS[path] ?? { bytes: ok(path === '/alive' ? 'alive' : 'fine') });
    fleet = await startFleet({ relays: 1 });
    connector = await fleet.connector({ url: origin.url, ha: 1 });
  });
  afterAll(async () => {
    await fleet?.close();
    await origin?.close();
  });

  const relay = () => fleet.relays[0]!;
  const bothAlive = async () => {
    expect(relay().proc.running).toBe(true);
    expect(connector.running).toBe(true);
    const r = await waitFor(async () => {
      const x = await req(`${relay().publicUrl}/alive`, { host: fleet.hostname });
      return x.status === 200 ? x : null;
    }, 10_000, { message: 'a good request after the hostile one' });
    expect(r.text).toBe('alive');
  };

  async function onKeepAlive(path: string): Promise<{ first: ParsedResponse | 'closed'; second: ParsedResponse | 'closed'; raw: string }> {
    const c = new RawClient(relay().http);
    await c.connected;
    let raw = '';
    try {
      c.send(`GET ${path} HTTP/1.1\r\nHost: ${fleet.hostname}\r\n\r\n`);
      const first = await c.next();
      if (first !== 'closed') raw += first.statusLine + JSON.stringify(first.headers) + first.body;
      if (first === 'closed' || c.closed) return { first, second: 'closed', raw: raw + c.pending };
      c.send(`GET /next HTTP/1.1\r\nHost: ${fleet.hostname}\r\n\r\n`);
      const second = await c.next();
      if (second !== 'closed') raw += second.statusLine + JSON.stringify(second.headers) + second.body;
      return { first, second, raw: raw + c.pending };
    } finally {
      c.close();
    }
  }

  for (const path of ['/nul-reason', '/ctl-reason', '/del-reason', '/cr-reason', '/ctl-value', '/del-value', '/lf-value', '/two-lengths', '/cl-te', '/101-plain', '/status-1000']) {
    it(`${path}: 502 from the origin side, nothing injected, both processes serve on`, async () => {
      const r = await onKeepAlive(path);
      expect(r.raw).not.toMatch(/X-Injected|X-Forged|forged/i);
      expect(r.first).not.toBe('closed');
      const first = r.first as ParsedResponse;
      expect(first.status).toBe(502);
      expect(first.header('tunnel-error-source')).toBe('origin');
      expect(r.second).not.toBe('closed');
      expect((r.second as ParsedResponse).body).toBe('fine');
      await bothAlive();
    });
  }

  it('a body longer than its Content-Length: the client gets exactly the declared bytes and no forged response', async () => {
    const r = await onKeepAlive('/too-long');
    expect(r.first).not.toBe('closed');
    expect((r.first as ParsedResponse).status).toBe(200);
    expect((r.first as ParsedResponse).body).toBe('ok');
    expect(r.raw).not.toMatch(/X-Forged|forged/);
    expect(r.second).not.toBe('closed');
    expect((r.second as ParsedResponse).body).toBe('fine');
    await bothAlive();
  });

  it('a body shorter than its Content-Length: the client connection is cut, never reused', async () => {
    const r = await onKeepAlive('/too-short');
    expect(r.first).toBe('closed');
    await bothAlive();
  });

  for (const path of ['/204-body', '/304-body']) {
    it(`${path}: the answer has no body and the origin's extra bytes never reach the client`, async () => {
      const r = await onKeepAlive(path);
      expect(r.raw).not.toMatch(/X-Forged|forged/);
      if (r.second !== 'closed') expect(r.second.body).toBe('fine');
      await bothAlive();
    });
  }

  for (const path of ['/ws-ctl-reason', '/ws-del-value']) {
    it(`upgrade answer ${path}: 502, nothing of it reaches the client`, async () => {
      const r = await upgradeRequest(relay().http, { host: fleet.hostname }, path);
      expect(r).not.toBe('error');
      expect((r as Exclude<typeof r, 'error'>).status).toBe(502);
      await bothAlive();
    });
  }

  it('a refused upgrade with a body past its length: the extra bytes never reach the client', async () => {
    const c = new RawClient(relay().http);
    await c.connected;
    c.send(`GET /ws-refused-long HTTP/1.1\r\nHost: ${fleet.hostname}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
    const r = await c.next();
    await waitFor(() => c.closed, 5_000, { message: 'refused upgrade connection closed' });
    c.close();
    if (r !== 'closed') expect(r.status).toBe(403);
    expect(c.pending).not.toMatch(/X-Forged|forged/);
    await bothAlive();
  });
});
