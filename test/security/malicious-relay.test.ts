import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type http from 'node:http';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { startConnector, type Proc } from '../harness/procs.js';
import { FakeRelay, type RelayAnswer } from './peers.js';

// A connector may be pointed at a relay it should not trust (or a plain ws://
// link may be tampered with): no request head from a relay ends the
// connector. A head an origin could not be sent safely (CR LF, a second
// Host, a bad method or target, conflicting lengths) is a 400
// bad_request_head for that one stream; nothing of it reaches the origin.

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  raw: string[];
}

describe('a malicious relay', () => {
  let fleet: Fleet;
  let origin: Origin;
  let relay: FakeRelay;
  let connector: Proc;
  const seen: Seen[] = [];

  beforeAll(async () => {
    origin = await startOrigin((q, s) => {
      seen.push({ method: q.method ?? '', url: q.url ?? '', headers: q.headers, raw: q.rawHeaders });
      s.end(`ok ${q.url}`);
    });
    origin.server.on('upgrade', (q: http.IncomingMessage, sock) => {
      seen.push({ method: q.method ?? '', url: q.url ?? '', headers: q.headers, raw: q.rawHeaders });
      sock.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    });
    fleet = await startFleet({ relays: 1 });
    relay = await FakeRelay.start();
    connector = await startConnector({ token: fleet.token, relays: [relay.url], url: origin.url, ha: 1, extraArgs: ['--no-discover'] });
    await relay.ready();
  });
  afterAll(async () => {
    await relay?.close();
    await fleet?.close();
    await origin?.close();
  });

  const alive = async () => {
    expect(connector.running).toBe(true);
    const r = await relay.request({ path: '/alive' });
    expect(r).not.toBe('reset');
    expect((r as RelayAnswer).body).toBe('ok /alive');
  };
  const refused = (r: RelayAnswer | 'reset') => {
    expect(r).not.toBe('reset');
    const a = r as RelayAnswer;
    expect(a.status).toBe(400);
    expect(a.headers.find(([k]) => k.toLowerCase() === 'tunnel-error')?.[1]).toBe('bad_request_head');
  };

  const cases: Array<[string, Parameters<FakeRelay['request']>[0]]> = [
    ['CR LF in a header value', { headers: [['Host', 'app.test'], ['X-A', 'a\r\nX-Injected: 1']] }],
    ['CR LF in a header value of a WebSocket head', { kind: 'websocket', path: '/ws', headers: [['Host', 'app.test'], ['Upgrade', 'websocket'], ['X-A', 'a\r\nX-Injected: 1']] }],
    ['CR LF in the path', { path: '/x\r\nX-Injected: 1' }],
    ['CR LF in the path of a WebSocket head', { kind: 'websocket', path: '/ws HTTP/1.1\r\nX-Injected: 1\r\n\r\n', headers: [['Host', 'app.test'], ['Upgrade', 'websocket']] }],
    ['two Hosts on a WebSocket head', { kind: 'websocket', path: '/ws', headers: [['Host', 'app.test'], ['Host', 'other.test'], ['Upgrade', 'websocket']] }],
    ['two Hosts on a plain head', { headers: [['Host', 'app.test'], ['Host', 'app.test']] }],
    ['a method with a space', { method: 'GE T' }],
    ['a method with CR LF', { method: 'GET /x HTTP/1.1\r\nX-Injected: 1\r\n' }],
    ['a WebSocket head with a bad method', { kind: 'websocket', method: 'G\x00T', path: '/ws', headers: [['Host', 'app.test'], ['Upgrade', 'websocket']] }],
    ['a NUL in a header name', { headers: [['Host', 'app.test'], ['X\x00A', 'a']] }],
    ['an absolute-form target', { path: 'http://evil.test/x' }],
    ['a host that is not a host', { host: 'evil.test/x', headers: [['Host', 'evil.test/x']] }],
    ['Content-Length with Transfer-Encoding', { method: 'POST', headers: [['Host', 'app.test'], ['Content-Length', '3'], ['Transfer-Encoding', 'chunked']] }],
    ['two different Content-Lengths', { method: 'POST', headers: [['Host', 'app.test'], ['Content-Length', '3'], ['Content-Length', '4']] }],
  ];
  for (const [name, head] of cases) {
    it(`${name}: 400 bad_request_head for that stream, nothing reaches the origin, the connector serves on`, async () => {
      const before = seen.length;
      refused(await relay.request(head, head.method === 'POST' ? Buffer.from('abc') : undefined));
      expect(seen.length).toBe(before);
      await alive();
      expect(connector.logs.some((l) => l.code === 'bad_request_head')).toBe(true);
    });
  }

  it('a //host path stays on the configured origin, as a path', async () => {
    const r = await relay.request({ path: '//evil.test/x' });
    expect((r as RelayAnswer).status).toBe(200);
    expect(seen.at(-1)!.url).toBe('//evil.test/x');
    await alive();
  });

  it('forwarding headers in the head are replaced by the connector with the head client IP', async () => {
    const spoof: Array<[string, string]> = [
      ['Host', 'app.test'],
      ['X-Real-IP', '6.6.6.6'],
      ['Forwarded', 'for=6.6.6.6'],
      ['Tunnel-Connecting-IP', '6.6.6.6'],
      ['CF-Connecting-IP', '6.6.6.6'],
      ['True-Client-IP', '6.6.6.6'],
    ];
    await relay.request({ path: '/fwd', headers: spoof, clientIp: '203.0.113.9' });
    const h = seen.at(-1)!.headers;
    expect(h['x-real-ip']).toBe('203.0.113.9');
    expect(h['tunnel-connecting-ip']).toBe('203.0.113.9');
    expect(h['forwarded']).toBeUndefined();
    expect(h['cf-connecting-ip']).toBeUndefined();
    expect(h['true-client-ip']).toBeUndefined();
    await relay.request({ kind: 'websocket', path: '/ws', headers: [...spoof, ['Upgrade', 'websocket'], ['Connection', 'Upgrade']], clientIp: '203.0.113.9' }).catch(() => 'reset');
    const u = seen.at(-1)!;
    expect(u.url).toBe('/ws');
    expect(u.headers['x-real-ip']).toBe('203.0.113.9');
    expect(u.headers['tunnel-connecting-ip']).toBe('203.0.113.9');
    expect(u.headers['forwarded']).toBeUndefined();
    await alive();
  });
});
