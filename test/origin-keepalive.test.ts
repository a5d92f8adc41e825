import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { createTunnel, startConnector } from './harness/procs.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';

// The classic source of spurious 502s: a pooled keep-alive socket the origin
// closes just as the next request is written into it.

describe('origin keep-alive pool', () => {
  let fleet: Fleet;
  let hinted: Origin;
  let rude: net.Server;
  let rudeSockets = 0;
  let posts = 0;
  // An origin that advertises `Keep-Alive: timeout=2` and, instead of racing
  // the pool by closing at 2 s, records every request that arrives on a socket
  // idle for 2 s or more: each is a request the pool wrote into a socket a
  // real origin would have closed (the race that becomes a 502, or a retry
  // that hides it). Observed at the origin, so no retry can mask it.
  let strict: net.Server;
  const strictLog: Array<{ socket: number; idleMs: number }> = [];
  // An origin that advertises no keep-alive timeout and never closes an idle
  // socket itself: only the connector's `keepAliveTimeout` (1 s here) ends them.
  let quiet: net.Server;
  const quietSockets: Array<{ requests: number; lastAnswer: number; closedByClientAfterMs?: number }> = [];

  beforeAll(async () => {
    // A Node origin: closes idle sockets after 1.2 s and says so (Keep-Alive: timeout=1).
    hinted = await startOrigin((q, s) => s.end(`hinted ${q.url}`), { keepAliveTimeout: 1_200 });
    // An origin that keeps sockets open but resets any socket on its SECOND
    // request, without a word of warning: the worst case for a pool. (And it
    // resets every POST, to show a POST is never replayed.)
    rude = net.createServer((sock) => {
      rudeSockets++;
      let served = 0;
      let buf = '';
      sock.on('data', (d) => {
        buf += d.toString('latin1');
        if (!buf.includes('\r\n\r\n')) return;
        const isPost = buf.startsWith('POST ');
        buf = '';
        if (isPost) {
          posts++;
          return void sock.resetAndDestroy();
        }
        if (served++ === 0) sock.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: keep-alive\r\n\r\nrude');
        else sock.resetAndDestroy();
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => rude.listen(0, '127.0.0.1', r));
    let strictSockets = 0;
    strict = net.createServer((sock) => {
      const id = ++strictSockets;
      let last = Date.now();
      let buf = '';
      sock.on('data', (d) => {
        buf += d.toString('latin1');
        for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
          buf = buf.slice(end + 4); // GETs only: no body
          strictLog.push({ socket: id, idleMs: Date.now() - last });
          sock.write('HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: keep-alive\r\nKeep-Alive: timeout=2\r\n\r\nstrict');
          last = Date.now();
        }
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => strict.listen(0, '127.0.0.1', r));
    quiet = net.createServer((sock) => {
      const me = { requests: 0, lastAnswer: Date.now() } as (typeof quietSockets)[number];
      quietSockets.push(me);
      let buf = '';
      sock.on('data', (d) => {
        buf += d.toString('latin1');
        for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
          buf = buf.slice(end + 4); // GETs only: no body
          me.requests++;
          sock.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nquiet');
          me.lastAnswer = Date.now();
        }
      });
      sock.on('end', () => {
        me.closedByClientAfterMs = Date.now() - me.lastAnswer;
        sock.end();
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => quiet.listen(0, '127.0.0.1', r));
    fleet = await startFleet({ relays: 1 });
    await fleet.connector({ url: hinted.url, ha: 1 });
    const rudeToken = await createTunnel({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, name: 'rude', hostnames: ['rude.test'] });
    await startConnector({ token: rudeToken, relays: [fleet.relays[0]!.connectUrl], url: `http://127.0.0.1:${(rude.address() as AddressInfo).port}`, ha: 1 });
    const strictToken = await createTunnel({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, name: 'strict', hostnames: ['strict.test'] });
    await startConnector({ token: strictToken, relays: [fleet.relays[0]!.connectUrl], url: `http://127.0.0.1:${(strict.address() as AddressInfo).port}`, ha: 1 });
    const quietToken = await createTunnel({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, name: 'quiet', hostnames: ['quiet.test'] });
    const quietConfig = path.join(fleet.dir, 'quiet.yml');
    writeFileSync(
      quietConfig,
      `ingress:\n  - hostname: quiet.test\n    service: http://127.0.0.1:${(quiet.address() as AddressInfo).port}\n    originRequest:\n      keepAliveTimeout: 1s\n  - service: http_status:404\n`,
    );
    await startConnector({ token: quietToken, relays: [fleet.relays[0]!.connectUrl], config: quietConfig, ha: 1 });
  });
  afterAll(async () => {
    await fleet?.close();
    await hinted?.close();
    rude?.close();
    strict?.close();
    quiet?.close();
  });

  it('no request is written to a pooled socket the origin’s advertised keep-alive has expired (observed at the origin)', async () => {
    const url = fleet.relays[0]!.publicUrl;
    // Gaps after each request: a short one (the socket is reused), then
    // ones past the retirement point (1 s before the advertised 2 s) and
    // past the advertised timeout itself.
    const gaps = [300, 1_300, 2_300, 2_600, 200];
    const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
    for (const [i, gap] of gaps.entries()) {
      const r = await req(`${url}/s${i}`, { host: 'strict.test' });
      expect(r.status, `request ${i}: ${r.text}`).toBe(200);
      await wait(gap); // the idle time under test, not a wait for an event
    }
    expect((await req(`${url}/last`, { host: 'strict.test' })).text).toBe('strict');
    expect(strictLog).toHaveLength(gaps.length + 1);
    const late = strictLog.filter((x) => x.idleMs >= 2_000);
    expect(late, `requests on sockets idle ≥ 2 s: ${JSON.stringify(strictLog)}`).toEqual([]);
    // The pool does reuse sockets inside the keep-alive window (it is a pool, not a socket per request).
    expect(new Set(strictLog.map((x) => x.socket)).size).toBeLessThan(strictLog.length);
  });

  it('retires pooled sockets before the origin’s advertised keep-alive timeout: no 502 at the boundary', async () => {
    const url = fleet.relays[0]!.publicUrl;
    for (let i = 0; i < 5; i++) {
      const r = await req(`${url}/k${i}`, { host: fleet.hostname });
      expect(r.status, `request ${i}: ${r.text}`).toBe(200);
      expect(r.text).toBe(`hinted /k${i}`);
      // Land the next request right where the origin closes its idle socket.
      await new Promise((res) => setTimeout(res, 1_150 + i * 20));
    }
  });

  it('an origin that advertises no keep-alive timeout: originRequest.keepAliveTimeout (1 s) closes the idle pooled socket, and the next request opens a new one', async () => {
    const url = fleet.relays[0]!.publicUrl;
    expect((await req(`${url}/q1`, { host: 'quiet.test' })).text).toBe('quiet');
    expect(quietSockets).toHaveLength(1);
    // The connector, not the origin, ends the idle socket (the origin never would).
    await waitFor(() => quietSockets[0]!.closedByClientAfterMs !== undefined, 10_000, { message: 'the idle pooled socket closed by the connector' });
    expect(quietSockets[0]!.closedByClientAfterMs).toBeGreaterThanOrEqual(500);
    expect((await req(`${url}/q2`, { host: 'quiet.test' })).text).toBe('quiet');
    expect(quietSockets.map((q) => q.requests)).toEqual([1, 1]);
  });

  it('a GET written into a socket the origin resets is retried once on a fresh one; a POST gets 502 origin_reset', async () => {
    const url = fleet.relays[0]!.publicUrl;
    const first = await req(`${url}/one`, { host: 'rude.test' });
    expect(first.text).toBe('rude');
    const before = rudeSockets;
    const get = await req(`${url}/two`, { host: 'rude.test' });
    expect(get.status).toBe(200);
    expect(get.text).toBe('rude');
    expect(rudeSockets).toBe(before + 1); // the retry opened a new socket
    const post = await req(`${url}/three`, { host: 'rude.test', method: 'POST', body: 'not replayable', headers: { accept: 'application/json' } });
    expect(post.status).toBe(502);
    expect(post.header('tunnel-error')).toBe('origin_reset');
    expect(post.header('tunnel-error-source')).toBe('origin');
    expect(posts).toBe(1); // not replayed
  });
});
