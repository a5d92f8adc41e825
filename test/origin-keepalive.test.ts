import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { createTunnel, startConnector } from './harness/procs.js';
import { req } from './harness/http.js';

// The classic source of spurious 502s: a pooled keep-alive socket the origin
// closes just as the next request is written into it.

describe('origin keep-alive pool', () => {
  let fleet: Fleet;
  let hinted: Origin;
  let rude: net.Server;
  let rudeSockets = 0;
  let posts = 0;

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
    fleet = await startFleet({ relays: 1 });
    await fleet.connector({ url: hinted.url, ha: 1 });
    const rudeToken = await createTunnel({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, name: 'rude', hostnames: ['rude.test'] });
    await startConnector({ token: rudeToken, relays: [fleet.relays[0]!.connectUrl], url: `http://127.0.0.1:${(rude.address() as AddressInfo).port}`, ha: 1 });
  });
  afterAll(async () => {
    await fleet?.close();
    await hinted?.close();
    rude?.close();
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
