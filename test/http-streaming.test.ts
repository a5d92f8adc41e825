// Streaming through the tunnel (issue "Data path"): a 1 GiB upload and a
// 1 GiB download with SHA-256 on both ends, server-sent events event by event,
// a WebSocket echo with a clean close, and a long poll held 60 s. The tests
// run concurrently (the long poll sets the file's pace), so the transfers
// also prove the other streams are not starved by a bulk one.

import http from 'node:http';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { request as undiciRequest } from 'undici';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { GiB, hashReadable, MiB, PatternSource } from './harness/data-path.js';

const SIZE = 1 * GiB;
const SSE_EVENTS = 20;
const HOLD_MS = 60_000;

/** The origin's side of one SSE exchange: the test acks each event before the next is sent. */
const sseAcks = new Map<string, (i: number) => void>();
let downloadSource: PatternSource | undefined;

function origin(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url!, 'http://x');
  switch (url.pathname) {
    case '/upload': {
      const h = createHash('sha256');
      let bytes = 0;
      req.on('data', (c: Buffer) => {
        bytes += c.length;
        h.update(c);
      });
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ bytes, sha256: h.digest('hex'), te: req.headers['transfer-encoding'] ?? null, cl: req.headers['content-length'] ?? null }));
      });
      return;
    }
    case '/download': {
      req.resume();
      downloadSource = new PatternSource(SIZE, 11);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(SIZE) });
      downloadSource.pipe(res);
      return;
    }
    case '/sse': {
      req.resume();
      const id = url.searchParams.get('id')!;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      // The head goes out alone: the first event waits until the client has the head
      // (an EventSource is 'open' on the head; a tunnel must not hold it for a body byte).
      res.flushHeaders();
      let i = -1;
      const send = () => res.write(`id: ${i}\nevent: tick\ndata: ${JSON.stringify({ i, sentAt: Date.now() })}\n\n`);
      sseAcks.set(id, (acked) => {
        if (acked !== i) return;
        if (++i === SSE_EVENTS) {
          sseAcks.delete(id);
          res.end();
        } else send();
      });
      return;
    }
    case '/poll': {
      req.resume();
      const t = setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(`answered after ${HOLD_MS} ms`);
      }, HOLD_MS);
      res.once('close', () => clearTimeout(t));
      return;
    }
    default:
      res.writeHead(404);
      res.end();
  }
}

describe.concurrent('streaming through the tunnel', () => {
  let fleet: Fleet;
  let org: Origin;
  let wss: WebSocketServer;
  let ports: number[];

  beforeAll(async () => {
    org = await startOrigin(origin);
    wss = new WebSocketServer({ server: org.server, path: '/ws' });
    fleet = await startFleet({ relays: 2 });
    await fleet.connector({ url: org.url });
    ports = fleet.relays.map((r) => r.http);
  });
  afterAll(async () => {
    for (const c of wss?.clients ?? []) c.terminate();
    wss?.close();
    await fleet?.close();
    await org?.close();
  });

  it('uploads 1 GiB with matching SHA-256 on both ends', { timeout: 170_000 }, async () => {
    const src = new PatternSource(SIZE, 5);
    const started = performance.now();
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: ports[0], method: 'PUT', path: '/upload', agent: false, setHost: false, headers: { host: 'app.test', 'content-length': String(SIZE) } }, resolve);
      req.on('error', reject);
      src.pipe(req);
    });
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    const secs = (performance.now() - started) / 1000;
    const got = JSON.parse(Buffer.concat(chunks).toString()) as { bytes: number; sha256: string; cl: string | null; te: string | null };
    console.log(`[data-path] 1 GiB upload through the tunnel: ${(SIZE / 1e6 / secs).toFixed(1)} MB/s (${secs.toFixed(1)} s)`);
    expect(res.statusCode).toBe(200);
    expect(got.bytes).toBe(SIZE);
    expect(got.cl).toBe(String(SIZE));
    expect(got.te).toBeNull();
    expect(got.sha256).toBe(src.sha256());
  });

  it('downloads 1 GiB with matching SHA-256 on both ends', { timeout: 170_000 }, async () => {
    const started = performance.now();
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port: ports[1], path: '/download', agent: false, setHost: false, headers: { host: 'app.test' } }, resolve);
      req.on('error', reject);
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-length']).toBe(String(SIZE));
    const got = await hashReadable(res);
    const secs = (performance.now() - started) / 1000;
    console.log(`[data-path] 1 GiB download through the tunnel: ${(SIZE / 1e6 / secs).toFixed(1)} MB/s (${secs.toFixed(1)} s)`);
    expect(got.bytes).toBe(SIZE);
    expect(got.sha256).toBe(downloadSource!.sha256());
  });

  it('delivers server-sent events one by one, each before the origin sends the next', { timeout: 60_000 }, async () => {
    for (const [n, port] of ports.entries()) {
      const id = `sse-${n}`;
      const headStarted = Date.now();
      const res = await undiciRequest(`http://127.0.0.1:${port}/sse?id=${id}`, { headers: { host: 'app.test', accept: 'text/event-stream' }, headersTimeout: 10_000, bodyTimeout: 10_000 });
      const headMs = Date.now() - headStarted;
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toBe('text/event-stream');
      sseAcks.get(id)!(-1); // head received: now the origin sends event 0
      const latencies: number[] = [];
      let buf = '';
      let next = 0;
      for await (const chunk of res.body) {
        buf += (chunk as Buffer).toString('utf8');
        let end: number;
        while ((end = buf.indexOf('\n\n')) !== -1) {
          const ev = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = JSON.parse(/^data: (.*)$/m.exec(ev)![1]!) as { i: number; sentAt: number };
          expect(data.i).toBe(next);
          expect(ev).toContain(`id: ${next}`);
          latencies.push(Date.now() - data.sentAt);
          // The origin holds event i+1 until this ack: a buffering tunnel would stall here.
          sseAcks.get(id)!(next++);
        }
        // Nothing beyond the one outstanding event can ever be in flight.
        expect(buf).toBe('');
      }
      expect(next).toBe(SSE_EVENTS);
      latencies.sort((a, b) => a - b);
      console.log(`[data-path] SSE via relay ${n}: head in ${headMs} ms, ${SSE_EVENTS} events, latency p50 ${latencies[SSE_EVENTS >> 1]} ms, max ${latencies.at(-1)} ms`);
      // Generous: the 1 GiB transfers share the two cores with this test.
      expect(latencies.at(-1)!).toBeLessThan(2_000);
    }
  });

  it('upgrades to a WebSocket, echoes both ways, and closes cleanly from either end', { timeout: 60_000 }, async () => {
    const serverCloses: Array<{ code: number; reason: string }> = [];
    wss.on('connection', (ws) => {
      ws.on('message', (data: RawData, isBinary: boolean) => {
        const text = isBinary ? '' : data.toString();
        if (text === 'please close') ws.close(4002, 'server-bye');
        else ws.send(data, { binary: isBinary });
      });
      ws.on('close', (code, reason) => serverCloses.push({ code, reason: reason.toString() }));
      ws.send('hello from origin');
    });

    const open = async (port: number) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { host: 'app.test' } });
      const messages: Array<{ data: Buffer; binary: boolean }> = [];
      const waiters: Array<() => void> = [];
      ws.on('message', (data: RawData, binary: boolean) => {
        messages.push({ data: data as Buffer, binary });
        waiters.shift()?.();
      });
      const closed = once(ws, 'close') as Promise<[number, Buffer]>;
      const upgrade = once(ws, 'upgrade') as Promise<[http.IncomingMessage]>;
      await once(ws, 'open');
      const next = async () => {
        if (messages.length === 0) await new Promise<void>((r) => waiters.push(r));
        return messages.shift()!;
      };
      return { ws, next, closed, upgrade };
    };

    // Client-initiated close.
    const a = await open(ports[0]!);
    const [upgradeRes] = await a.upgrade;
    expect(upgradeRes.statusCode).toBe(101);
    expect(upgradeRes.headers['tunnel-request-id']).toMatch(/^[0-9a-f]{21}$/);
    expect((await a.next()).data.toString()).toBe('hello from origin'); // origin → client
    a.ws.send('ping 1');
    const e1 = await a.next();
    expect(e1.binary).toBe(false);
    expect(e1.data.toString()).toBe('ping 1');
    const blob = Buffer.alloc(3 * MiB + 3, 0xa5);
    blob.write('binary start');
    a.ws.send(blob);
    const e2 = await a.next();
    expect(e2.binary).toBe(true);
    expect(e2.data.equals(blob)).toBe(true);
    a.ws.close(4001, 'bye');
    const [codeA, reasonA] = await a.closed;
    expect(codeA).toBe(4001);
    expect(reasonA.toString()).toBe('bye');

    // Origin-initiated close, through the other relay.
    const b = await open(ports[1]!);
    expect((await b.next()).data.toString()).toBe('hello from origin');
    b.ws.send('please close');
    const [codeB, reasonB] = await b.closed;
    expect(codeB).toBe(4002);
    expect(reasonB.toString()).toBe('server-bye');

    await expect.poll(() => serverCloses, { timeout: 5_000 }).toEqual([
      { code: 4001, reason: 'bye' },
      { code: 4002, reason: 'server-bye' },
    ]);
  });

  it(`holds a long poll for ${HOLD_MS / 1000} s, then delivers the answer`, { timeout: HOLD_MS + 60_000 }, async () => {
    const started = Date.now();
    const res = await undiciRequest(`http://127.0.0.1:${ports[1]}/poll`, { headers: { host: 'app.test' }, headersTimeout: HOLD_MS + 30_000, bodyTimeout: HOLD_MS + 30_000 });
    const text = await res.body.text();
    const elapsed = Date.now() - started;
    expect(res.statusCode).toBe(200);
    expect(text).toBe(`answered after ${HOLD_MS} ms`);
    expect(elapsed).toBeGreaterThanOrEqual(HOLD_MS - 50);
  });
});
