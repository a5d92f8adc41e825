import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type http from 'node:http';
import { Agent } from 'undici';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { startRelay, type RelayProc } from '../harness/procs.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';
import { rawConnect, type RawConn } from '../harness/raw-client.js';
import { limitHits, metricsUrl, scrape } from '../harness/limit-metrics.js';

// Ceilings on the public side of a relay: open connections per client IP
// (429) and in total (503), answered before the descriptors run out; a
// request body that stops coming (408, or an abort once the answer has
// started, and the stream to the connector reset); a request head that
// never ends. Each hit moves tunnel_relay_limit_hits_total by exactly one.

describe('security: public-side ceilings', () => {
  let fleet: Fleet;
  let origin: Origin;
  let metrics: string;
  let capped: RelayProc;
  let cappedMetrics: string;
  const held: RawConn[] = [];
  /** What the origin saw of uploads: path → 'complete' | 'aborted'. */
  const uploads = new Map<string, string>();
  /** /upload-held: the origin reads nothing until this is called. */
  let releaseHeld: (() => void) | null = null;
  /** /hold-open: answered only when the test lets go (a connection busy with a request). */
  const holdOpen: (() => void)[] = [];

  beforeAll(async () => {
    origin = await startOrigin((q: http.IncomingMessage, s: http.ServerResponse) => {
      if (q.url?.startsWith('/upload')) {
        // /upload-early answers before reading the body.
        if (q.url.startsWith('/upload-early')) {
          s.writeHead(200, { 'content-type': 'text/plain' });
          s.write('started ');
        }
        let n = 0;
        if (q.url.startsWith('/upload-held')) {
          q.pause();
          releaseHeld = () => q.resume();
        }
        q.on('data', (c: Buffer) => (n += c.length));
        q.on('end', () => {
          uploads.set(q.url!, 'complete');
          s.end(`got ${n}`);
        });
        q.on('close', () => {
          if (!q.complete) uploads.set(q.url!, 'aborted');
        });
        return;
      }
      if (q.url?.startsWith('/hold-open')) {
        holdOpen.push(() => s.end('released'));
        return;
      }
      s.end(`ok ${q.url}`);
    });
    fleet = await startFleet({
      relays: 1,
      relayArgs: ['--metrics', '127.0.0.1:0', '--max-public-connections-per-ip', '10', '--body-idle-timeout', '1s', '--headers-timeout', '1s'],
    });
    metrics = await metricsUrl(fleet.relays[0]!);
    await fleet.connector({ url: origin.url, ha: 2 });
    capped = await startRelay({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, id: 'relay-capped', extraArgs: ['--metrics', '127.0.0.1:0', '--max-public-connections', '8', '--max-public-connections-per-ip', '0'] });
    cappedMetrics = await metricsUrl(capped);
  });
  afterAll(async () => {
    for (const c of held) c.socket.destroy();
    await fleet?.close();
    await origin?.close();
  });

  const relay = () => fleet.relays[0]!;
  /** A good request on a fresh connection (the shared pool's idle sockets count against the per-IP cap). */
  const stillServing = async (r: RelayProc = relay()) => {
    expect(r.proc.running).toBe(true);
    const agent = new Agent({ pipelining: 0 });
    try {
      expect((await req(`${r.publicUrl}/alive`, { host: fleet.hostname, dispatcher: agent })).text).toBe('ok /alive');
    } finally {
      await agent.close();
    }
  };
  const openConns = async (url: string) => (await scrape(url, 'tunnel_relay_public_connections')).get('') ?? 0;

  /** Hold idle connections until the relay counts `n` open, then one more: the refused one. */
  async function fillThenOneMore(port: number, url: string, n: number, busy = false): Promise<string> {
    for (let guard = 0; (await openConns(url)) < n && guard < n; guard++) {
      const c = await rawConnect(port);
      // Busy: a request the origin holds, so the relay's 1 s headers timeout
      // cannot close a held connection while a loaded machine opens the rest.
      if (busy) c.socket.write(`GET /hold-open HTTP/1.1\r\nHost: ${fleet.hostname}\r\n\r\n`);
      held.push(c);
    }
    await waitFor(async () => (await openConns(url)) === n, 5_000, { message: `${n} open connections` });
    const extra = await rawConnect(port);
    await waitFor(() => extra.closed, 10_000, { message: 'the extra connection answered and closed' });
    return extra.text;
  }

  async function release(url: string): Promise<void> {
    for (const c of held.splice(0)) c.socket.destroy();
    for (const answer of holdOpen.splice(0)) answer();
    await waitFor(async () => (await openConns(url)) === 0, 5_000, { message: 'connections released' });
  }

  it('per client IP: the connection past the cap gets a 429 and a close; a good request works once they go', async () => {
    const before = await limitHits(metrics);
    const answer = await fillThenOneMore(relay().http, metrics, 10, true);
    expect(answer).toMatch(/^HTTP\/1\.1 429 /);
    expect(answer).toContain('"code":"too_many_connections"');
    expect(answer).toMatch(/Retry-After: 1/i);
    const after = await limitHits(metrics);
    expect(after.public_connections_per_ip! - before.public_connections_per_ip!).toBe(1);
    expect(after.public_connections! - before.public_connections!).toBe(0);
    await release(metrics);
    await stillServing();
  });

  it('in total: the connection past the cap gets a 503 and a close', async () => {
    const before = await limitHits(cappedMetrics);
    const answer = await fillThenOneMore(capped.http, cappedMetrics, 8);
    expect(answer).toMatch(/^HTTP\/1\.1 503 /);
    expect(answer).toContain('"code":"relay_at_capacity"');
    const after = await limitHits(cappedMetrics);
    expect(after.public_connections! - before.public_connections!).toBe(1);
    await release(cappedMetrics);
    expect(capped.proc.running).toBe(true);
  });

  it('a request body that stops before the answer: 408, connection closed, stream to the origin reset', async () => {
    const before = await limitHits(metrics);
    const c = await rawConnect(relay().http);
    held.push(c);
    c.socket.write(`POST /upload-stalled HTTP/1.1\r\nHost: ${fleet.hostname}\r\nContent-Length: 100\r\n\r\nx`);
    await waitFor(() => c.closed, 10_000, { message: 'stalled upload cut' });
    const answer = c.text;
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(answer).toMatch(/tunnel-error: request_body_timeout/i);
    expect(answer).toMatch(/connection: close/i);
    await waitFor(() => uploads.get('/upload-stalled') === 'aborted', 5_000, { message: 'origin saw the upload aborted' });
    const after = await limitHits(metrics);
    expect(after.body_idle_timeout! - before.body_idle_timeout!).toBe(1);
    held.length = 0;
    await stillServing();
  });

  it('a request body that stops after the answer started: the response is aborted, the origin stream reset', async () => {
    const before = await limitHits(metrics);
    const c = await rawConnect(relay().http);
    c.socket.write(`POST /upload-early HTTP/1.1\r\nHost: ${fleet.hostname}\r\nContent-Length: 100\r\n\r\nx`);
    await waitFor(() => c.closed, 10_000, { message: 'answered upload cut' });
    const answer = c.text;
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(answer).toContain('started ');
    expect(answer).not.toContain('got ');
    await waitFor(() => uploads.get('/upload-early') === 'aborted', 5_000, { message: 'origin saw the upload aborted' });
    const after = await limitHits(metrics);
    expect(after.body_idle_timeout! - before.body_idle_timeout!).toBe(1);
    await stillServing();
  });

  it('a slow body that keeps coming is not cut', async () => {
    const before = await limitHits(metrics);
    const c = await rawConnect(relay().http);
    c.socket.write(`POST /upload-slow HTTP/1.1\r\nHost: ${fleet.hostname}\r\nContent-Length: 8\r\nConnection: close\r\n\r\n`);
    // 8 bytes, one each 250 ms: 2 s in all, never 1 s apart.
    let sent = 0;
    const pace = setInterval(() => {
      c.socket.write('y');
      if (++sent === 8) clearInterval(pace);
    }, 250);
    await waitFor(() => c.closed, 10_000, { message: 'slow upload answered' });
    clearInterval(pace);
    const answer = c.text;
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(answer).toContain('got 8');
    expect((await limitHits(metrics)).body_idle_timeout).toBe(before.body_idle_timeout);
  });

  it('a body the relay itself holds back (slow origin) is not the client idling', async () => {
    const before = await limitHits(metrics);
    const c = await rawConnect(relay().http);
    const size = 64 * 1024 * 1024;
    c.socket.write(`POST /upload-held HTTP/1.1\r\nHost: ${fleet.hostname}\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n`);
    c.socket.write(Buffer.alloc(size, 0x61));
    // The origin reads nothing: backpressure reaches the client, whose bytes stop going out.
    await waitFor(() => releaseHeld !== null, 10_000, { message: 'origin holding the upload' });
    let stuck = -1;
    await waitFor(() => {
      const left = c.socket.writableLength;
      const same = left > 0 && left === stuck;
      stuck = left;
      return same;
    }, 20_000, { intervalMs: 500, message: 'client upload stalled by backpressure' });
    // Three times the 1 s body idle timeout with no byte moving, and the connection is still there.
    const t0 = Date.now();
    await waitFor(() => c.closed || Date.now() - t0 >= 3_000, 5_000, { message: '3 s held' });
    expect(c.closed).toBe(false);
    releaseHeld!();
    await waitFor(() => c.closed, 30_000, { message: 'held upload answered' });
    expect(c.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(c.text).toContain(`got ${size}`);
    expect((await limitHits(metrics)).body_idle_timeout).toBe(before.body_idle_timeout);
  });

  it('a request head that never ends is cut by the headers timeout', async () => {
    const c = await rawConnect(relay().http);
    c.socket.write(`GET /slowloris HTTP/1.1\r\nHost: ${fleet.hostname}\r\nX-A: `);
    // --headers-timeout 1s: closed within a few seconds (a 408 first, or just the close).
    await waitFor(() => c.closed, 10_000, { message: 'slow head cut' });
    expect(c.text === '' || /^HTTP\/1\.1 408 /.test(c.text)).toBe(true);
    await stillServing();
  });
});
