import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import * as path from 'node:path';
import { generateKeyFile } from '../../packages/relay/src/control/keys.js';
import { createTunnel, startConnector, startRelay, stopAll, tempDir, type RelayProc } from '../harness/procs.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { makeCa, issueCert, opensslMissing } from '../harness/certs.js';
import { limitHits, metricsUrl, scrape } from '../harness/limit-metrics.js';
import { h2get, h2session, pastConcurrentLimit, rapidReset } from '../harness/h2.js';
import { waitFor } from '../harness/wait.js';

// Ceilings of HTTP/2 on the public listener, each configurable and counted:
// streams open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS:
// the origin never sees more), the size of one request's header list (431,
// and a stream reset far past it), and the rapid-reset attack
// (CVE-2023-44487: streams opened and cancelled at once) answered with a
// GOAWAY, while other connections are served on.

const skip = opensslMissing('HTTP/2 limits test');

describe.skipIf(skip !== null)('security: HTTP/2 ceilings on the public listener', () => {
  const tmp = tempDir();
  let ca: ReturnType<typeof makeCa>;
  let relay: RelayProc;
  let port: number;
  let origin: Origin;
  let metrics: string;
  let concurrent = 0;
  let maxConcurrent = 0;
  const held: Array<() => void> = [];

  beforeAll(async () => {
    ca = makeCa(tmp.dir);
    const leaf = issueCert(ca, path.join(tmp.dir, 'relay'), { names: ['h2.test'] });
    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const store = `file:${path.join(tmp.dir, 'store')}`;
    relay = await startRelay({
      dir: tmp.dir,
      store,
      keys,
      id: 'relay-h2-limits',
      extraArgs: ['--tls-cert', leaf.cert, '--tls-key', leaf.key, '--https', '127.0.0.1:0', '--metrics', '127.0.0.1:0',
        '--h2-max-concurrent-streams', '3', '--h2-max-header-list-size', '4096', '--h2-reset-rate', '20', '--body-idle-timeout', '1s', '--drain-timeout', '1s', '--drain-delay', '0s'],
    });
    port = (relay.proc.logs.find((l) => l.event === 'listening')!.ports as { https: number }).https;
    metrics = await metricsUrl(relay);
    origin = await startOrigin((q, s) => {
      if (q.url === '/hold') {
        concurrent++;
        maxConcurrent = Math.max(maxConcurrent, concurrent);
        held.push(() => {
          concurrent--;
          s.end('held');
        });
        return;
      }
      s.end('ok');
    });
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'h2', hostnames: ['h2.test'], relays: [`wss://127.0.0.1:${relay.connect}`] });
    await startConnector({ token, relays: [`wss://127.0.0.1:${relay.connect}`], url: origin.url, env: { NODE_EXTRA_CA_CERTS: ca.cert }, ha: 1 });
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    tmp.cleanup();
  });

  const refusedBy = async (reason: string) => (await scrape(metrics, 'tunnel_relay_h2_refused_streams_total')).get(`reason=${reason}`) ?? 0;
  const connect = () => h2session(`https://127.0.0.1:${port}`, { ca: readFileSync(ca.cert), servername: 'h2.test' });

  it('concurrent streams: SETTINGS says 3, and of 8 held requests on one connection the origin never sees more than 3 at once', async () => {
    const s = await connect();
    try {
      expect(s.remoteSettings.maxConcurrentStreams).toBe(3);
      const all = Array.from({ length: 8 }, () => h2get(s, { ':path': '/hold', ':authority': 'h2.test' }));
      // Release them in rounds, each once the origin holds as many as the limit lets through.
      let released = 0;
      while (released < 8) {
        const want = Math.min(3, 8 - released);
        await waitFor(() => held.length >= want, 10_000, { message: `origin holds ${want}` });
        released += held.length;
        while (held.length > 0) held.shift()!();
      }
      expect(maxConcurrent).toBe(3);
      for (const r of await Promise.all(all)) expect(r.body).toBe('held');
    } finally {
      s.close();
    }
  });

  it('a client that opens a stream past the acknowledged limit gets GOAWAY; that stream and the 3 beside it are counted as refused', async () => {
    const refused = async () => (await scrape(metrics, 'tunnel_relay_h2_refused_streams_total')).get('reason=concurrent_streams') ?? 0;
    const before = { refused: await refused(), hits: (await limitHits(metrics)).h2_concurrent_streams ?? 0 };
    // Four streams for an origin that answers at once: the fourth arrives while the three wait on the tunnel.
    const goaway = await pastConcurrentLimit({ port, ca: readFileSync(ca.cert), servername: 'h2.test', authority: 'h2.test', streams: 4 });
    // nghttp2 queues GOAWAY(PROTOCOL_ERROR) and node closes the socket at once: the frame may not make it out.
    expect([http2.constants.NGHTTP2_PROTOCOL_ERROR, null]).toContain(goaway);
    await relay.proc.waitForLog((l) => l.event === 'h2-concurrent-streams', 5_000);
    expect(await refused()).toBe(before.refused + 4);
    expect((await limitHits(metrics)).h2_concurrent_streams).toBe(before.hits + 1);
    const other = await connect();
    try {
      expect((await h2get(other, { ':path': '/', ':authority': 'h2.test' })).body).toBe('ok');
    } finally {
      other.close();
    }
  });

  it('body idle timeout per stream: a stalled h2 upload gets 408 while PINGs keep its connection busy', async () => {
    const before = (await limitHits(metrics)).body_idle_timeout ?? 0;
    const s = await connect();
    const pinger = setInterval(() => s.ping(() => {}), 100);
    try {
      // An origin that holds its answer: only the relay's timer can end this.
      const stream = s.request({ ':method': 'POST', ':path': '/hold', ':authority': 'h2.test', 'content-length': '1000' }, { endStream: false });
      stream.write(Buffer.alloc(10));
      const status = await new Promise<number>((resolve, reject) => {
        stream.once('response', (h) => resolve(Number(h[':status'])));
        stream.once('error', reject);
        setTimeout(() => reject(new Error('no answer to the stalled upload in 8 s')), 8_000).unref();
      });
      expect(status).toBe(408);
      expect((await limitHits(metrics)).body_idle_timeout).toBe(before + 1);
      // The connection itself carries on.
      expect((await h2get(s, { ':path': '/', ':authority': 'h2.test' })).body).toBe('ok');
    } finally {
      clearInterval(pinger);
      s.close();
      while (held.length > 0) held.shift()!();
    }
  });

  it('header list size: over the limit is a 431 counted in /metrics; far over it the stream is reset; the connection serves on', async () => {
    const before = (await limitHits(metrics)).h2_header_list_size ?? 0;
    const s = await connect();
    try {
      const big = await h2get(s, { ':path': '/', ':authority': 'h2.test', 'x-big': 'a'.repeat(5000) });
      expect(big.status).toBe(431);
      expect(big.headers['tunnel-error']).toBe('headers_too_large');
      // The one error wire format (protocol error-answer.ts): source and request id, in the body and the headers.
      const answer = JSON.parse(big.body) as { error: Record<string, unknown> };
      expect(answer.error).toMatchObject({ status: 431, code: 'headers_too_large', source: 'relay', requestId: big.headers['tunnel-request-id'] });
      expect((await limitHits(metrics)).h2_header_list_size).toBe(before + 1);
      // Past twice the limit nghttp2 resets the stream before the head is whole.
      const huge = await h2get(s, { ':path': '/', ':authority': 'h2.test', 'x-big': 'a'.repeat(12_000) }).then(
        (r) => `answered ${r.status}`,
        (e: Error & { code?: string }) => e.code ?? e.message,
      );
      expect(huge).toMatch(/ERR_HTTP2_STREAM_ERROR|ENHANCE_YOUR_CALM|431/);
      const ok = await h2get(s, { ':path': '/', ':authority': 'h2.test' });
      expect(ok.body).toBe('ok');
    } finally {
      s.close();
    }
  });

  it("rapid reset, paced (every pending reset seen before more are read): the relay's own guard trips, GOAWAY ENHANCE_YOUR_CALM, counted and logged", async () => {
    const before = (await limitHits(metrics)).h2_reset_rate ?? 0;
    const logsBefore = relay.proc.countLogs((l) => l.event === 'h2-rapid-reset');
    // Two streams then a PING, the next two once it is acknowledged: within
    // the 3 concurrent streams, so node never refuses one itself (see below),
    // and far faster than 20 resets a second even on a loaded machine.
    const r = await rapidReset({ port, ca: readFileSync(ca.cert), servername: 'h2.test', authority: 'h2.test', streams: 400, paced: 2 });
    expect(r.goaway).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    expect(r.sent).toBeGreaterThan(20);
    expect((await limitHits(metrics)).h2_reset_rate).toBe(before + 1);
    await waitFor(() => relay.proc.countLogs((l) => l.event === 'h2-rapid-reset') === logsBefore + 1, 5_000, { message: 'h2-rapid-reset logged' });
    expect(relay.proc.logs.filter((l) => l.event === 'h2-rapid-reset').at(-1)).toMatchObject({ by: 'relay', clientIp: '127.0.0.1' });
  });

  it("rapid reset, flooded: the connection ends with GOAWAY (the relay's guard, or node's own on node ≥ 22), counted and logged either way; other clients are served", async () => {
    const before = (await limitHits(metrics)).h2_reset_rate ?? 0;
    const refusedBefore = await refusedBy('rapid_reset');
    const logsBefore = relay.proc.countLogs((l) => l.event === 'h2-rapid-reset');
    // At most 900 streams (each HEADERS then RST_STREAM at once), within 10 s,
    // after one GET the origin holds: that stream is open when the guard trips.
    // Fewer than 1,000: nghttp2's own reset limit (a burst of 1,000, then 33/s)
    // ends the session with INTERNAL_ERROR, and on a loaded machine the relay
    // can read more than 1,000 resets in one chunk before our guard's GOAWAY
    // goes out. From node 22 on, node keeps a reset stream against the
    // concurrency limit until JavaScript has seen it close, refuses the streams
    // read past it, and after 100 refusals ends the session (INTERNAL_ERROR)
    // itself: the relay records that as the same attack.
    const r = await rapidReset({ port, ca: readFileSync(ca.cert), servername: 'h2.test', authority: 'h2.test', streams: 900, hold: '/hold' });
    await waitFor(() => relay.proc.countLogs((l) => l.event === 'h2-rapid-reset') === logsBefore + 1, 5_000, { message: 'h2-rapid-reset logged' });
    const line = relay.proc.logs.filter((l) => l.event === 'h2-rapid-reset').at(-1)!;
    expect(line.by === 'relay' || line.by === 'node', JSON.stringify(line)).toBe(true);
    expect(r.goaway).toBe(line.by === 'relay' ? http2.constants.NGHTTP2_ENHANCE_YOUR_CALM : http2.constants.NGHTTP2_INTERNAL_ERROR);
    expect(r.sent).toBeGreaterThan(20);
    expect((await limitHits(metrics)).h2_reset_rate).toBe(before + 1);
    // The held stream (and any pair not yet reset) ended unserved, under its own reason.
    expect(await refusedBy('rapid_reset')).toBeGreaterThanOrEqual(refusedBefore + 1);
    while (held.length > 0) held.shift()!();
    // Another client, and a new connection from the same one, are served.
    const other = await connect();
    try {
      expect((await h2get(other, { ':path': '/', ':authority': 'h2.test' })).body).toBe('ok');
    } finally {
      other.close();
    }
  });
  // Last: it stops the relay. The drain deadline (1 s) ends a stream the origin
  // still holds; /metrics is closed by then, so the count is in the `drained` line.
  it('goaway: a stream still open at the drain deadline is cut and counted under `goaway` (node:http2 client)', async () => {
    const s = await connect();
    try {
      expect(await refusedBy('goaway')).toBe(0);
      const stream = s.request({ ':path': '/hold', ':authority': 'h2.test' });
      const ended = new Promise<string>((resolve) => {
        stream.once('response', (h) => resolve(`answered ${String(h[':status'])}`));
        stream.once('error', (e: Error & { code?: string }) => resolve(e.code ?? e.message));
        stream.once('close', () => resolve(`closed ${stream.rstCode}`));
      });
      stream.end();
      await waitFor(() => held.length >= 1, 10_000, { message: 'the origin holds the request' });
      relay.proc.signal('SIGTERM');
      const drained = await relay.proc.waitForLog((l) => l.event === 'drained', 15_000);
      expect(drained.h2RefusedStreams).toEqual({ concurrent_streams: expect.any(Number), rapid_reset: expect.any(Number), goaway: 1 });
      expect(await ended).not.toMatch(/^answered/);
    } finally {
      s.destroy();
      while (held.length > 0) held.shift()!();
    }
  });
});
