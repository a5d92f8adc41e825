// Relay-to-relay requests, attacked on the wire: relay A forwards to relay B
// (the only holder of the tunnel's connections) through a recording TCP proxy
// of ours on 127.0.0.1 (B advertises the proxy as its peer URL). A captured
// forwarded request is then replayed and altered, straight to B's peer port:
// each copy must be refused, and the origin must never see it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { Readable } from 'node:stream';
import { request } from 'undici';
import * as path from 'node:path';
import { generateKeyFile } from '../../packages/relay/src/control/keys.js';
import { createTunnel, startConnector, startRelay, stopAll, tempDir, type RelayProc } from '../harness/procs.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { rawHttp } from '../harness/data-path.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';

/** What the origin saw: complete requests by marker, and requests that ended without their body's end. */
const seen = { complete: [] as string[], aborted: [] as string[] };

/**
 * A TCP proxy that records what the forwarding relay sends, one whole
 * request at a time (the mode is decided per request, so kept-alive
 * connections follow it too). `pass`: the request goes on to the real peer
 * port; `hold`: it is kept (not delivered) and answered 502, so its nonce is
 * still unused at B.
 */
class Recorder {
  mode: 'pass' | 'hold' = 'pass';
  target = 0;
  readonly captures: Buffer[] = [];
  private readonly server = net.createServer((sock) => this.onConn(sock));
  port = 0;

  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  private readonly socks = new Set<net.Socket>();

  private onConn(sock: net.Socket): void {
    this.socks.add(sock);
    sock.on('close', () => this.socks.delete(sock));
    sock.on('error', () => {});
    let up: net.Socket | null = null;
    let pending = Buffer.alloc(0);
    sock.on('close', () => up?.destroy());
    sock.on('data', (d: Buffer) => {
      pending = Buffer.concat([pending, d]);
      for (let n = requestLength(pending); n > 0; n = requestLength(pending)) {
        const one = pending.subarray(0, n);
        pending = pending.subarray(n);
        this.captures.push(Buffer.from(one));
        if (this.mode === 'hold') {
          sock.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
          return;
        }
        if (!up) {
          up = net.connect({ host: '127.0.0.1', port: this.target });
          up.on('error', () => sock.destroy());
          up.on('data', (x) => sock.write(x));
          up.on('end', () => sock.end());
        }
        up.write(one);
      }
    });
  }

  async close(): Promise<void> {
    for (const s of this.socks) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}

/** The byte length of the first whole HTTP/1.1 request in `buf` (Content-Length or chunked), or 0. */
function requestLength(buf: Buffer): number {
  const s = buf.toString('latin1');
  const end = s.indexOf('\r\n\r\n');
  if (end < 0) return 0;
  const head = s.slice(0, end).toLowerCase();
  const cl = /\r\ncontent-length: *(\d+)/.exec(head);
  if (cl) return buf.length >= end + 4 + Number(cl[1]) ? end + 4 + Number(cl[1]) : 0;
  if (head.includes('transfer-encoding: chunked')) {
    const t = s.indexOf('\r\n0\r\n\r\n', end);
    return t < 0 ? 0 : t + 7;
  }
  return end + 4;
}

function setHeader(capture: Buffer, name: string, value: string): Buffer {
  const s = capture.toString('latin1');
  const re = new RegExp(`\r\n${name}: [^\r]*`, 'i');
  expect(re.test(s), `capture has a ${name} header`).toBe(true);
  return Buffer.from(s.replace(re, `\r\n${name}: ${value}`), 'latin1');
}

function addHeader(capture: Buffer, line: string): Buffer {
  const s = capture.toString('latin1');
  const i = s.indexOf('\r\n');
  return Buffer.from(s.slice(0, i + 2) + line + '\r\n' + s.slice(i + 2), 'latin1');
}

/** Flip one byte of the first occurrence of `marker` in the body (same length, framing intact). */
function alterBody(capture: Buffer, marker: string): Buffer {
  const s = capture.toString('latin1');
  const i = s.indexOf(marker, s.indexOf('\r\n\r\n'));
  expect(i, `capture holds ${marker}`).toBeGreaterThan(0);
  const out = Buffer.from(capture);
  out[i] = out[i]! ^ 0x20;
  return out;
}

/** Sends a captured request (made to close after the answer) straight to B's peer port. */
function replay(port: number, capture: Buffer) {
  return rawHttp(port, setHeaderOrAdd(capture, 'Connection', 'close'), 15_000);
}

function setHeaderOrAdd(capture: Buffer, name: string, value: string): Buffer {
  return new RegExp(`\r\n${name}: `, 'i').test(capture.toString('latin1')) ? setHeader(capture, name, value) : addHeader(capture, `${name}: ${value}`);
}

describe('security: captured peer requests are refused when replayed or altered', () => {
  let a: RelayProc;
  let b: RelayProc;
  let metricsPort = 0;
  const refusedBy = async (): Promise<Record<string, number>> => {
    const text = await (await request(`http://127.0.0.1:${metricsPort}/metrics`)).body.text();
    const out: Record<string, number> = {};
    for (const m of text.matchAll(/^tunnel_relay_peer_refused_total\{reason="([a-z_]+)"\} (\d+)$/gm)) out[m[1]!] = Number(m[2]);
    return out;
  };
  let origin: Origin;
  const rec = new Recorder();
  const tmp = tempDir();
  const host = 'app.test';

  beforeAll(async () => {
    origin = await startOrigin((q, res) => {
      const marker = String(q.headers['x-marker'] ?? '');
      let size = 0;
      q.on('data', (d: Buffer) => (size += d.length));
      q.on('end', () => {
        seen.complete.push(marker);
        res.end(`ok ${marker} ${size} cookie=${q.headers.cookie ?? ''} ip=${q.headers['tunnel-connecting-ip'] ?? ''} proto=${q.headers['x-forwarded-proto'] ?? ''}`);
      });
      q.on('close', () => {
        if (!q.complete) seen.aborted.push(marker);
      });
      q.on('error', () => {});
    });
    await rec.start();
    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const store = `file:${path.join(tmp.dir, 'store')}`;
    a = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-a' });
    b = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-b', extraArgs: ['--advertise-peer-url', `http://127.0.0.1:${rec.port}`, '--metrics', '127.0.0.1:0'] });
    metricsPort = (await b.proc.waitForLog((l) => l.event === 'metrics-listening', 15_000, 'relay-b metrics')).port as number;
    rec.target = b.peer!;
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'app', hostnames: [host], relays: [b.connectUrl] });
    await startConnector({ token, relays: [b.connectUrl], url: origin.url, ha: 2, extraArgs: ['--no-discover'] });
    // A learns that B holds the tunnel (fleet presence) and forwards through the recorder.
    await waitFor(async () => (await req(`${a.publicUrl}/warm`, { host, headers: { 'x-marker': 'warm' } })).status === 200, 15_000, { message: 'A forwards to B' });
  });
  afterAll(async () => {
    await stopAll();
    await rec.close();
    await origin?.close();
    tmp.cleanup();
  });

  it('a forwarded POST replayed twice within the window never reaches the origin again', async () => {
    rec.mode = 'pass';
    const before = rec.captures.length;
    const r = await req(`${a.publicUrl}/orders?id=7`, { method: 'POST', host, headers: { 'x-marker': 'replay-me', 'content-type': 'text/plain' }, body: 'buy 1 share' });
    expect(r.status).toBe(200);
    expect(r.text).toContain('ok replay-me 11');
    const capture = rec.captures.slice(before).find((c) => c.toString('latin1').includes('x-marker: replay-me'));
    expect(capture, 'the forwarded request was captured').toBeDefined();
    for (let i = 0; i < 2; i++) {
      const again = await replay(b.peer!, capture!);
      expect(again.status).toBe(403);
      expect(again.header('tunnel-error')).toBe('peer_refused');
      expect(again.body).toContain('replayed');
    }
    expect(seen.complete.filter((m) => m === 'replay-me')).toHaveLength(1);
  });

  it('an altered body, an added Cookie, a forged client IP or scheme are refused; the genuine copy then passes once', async () => {
    rec.mode = 'hold';
    const before = rec.captures.length;
    const r = await req(`${a.publicUrl}/transfer`, { method: 'POST', host, headers: { 'x-marker': 'held', 'content-type': 'text/plain' }, body: 'amount=100&to=alice' });
    expect(r.status).toBe(502); // the recorder kept it
    const capture = rec.captures[before]!;
    expect(capture.toString('latin1')).toContain('x-marker: held');
    rec.mode = 'pass';

    const attacks: Array<[string, Buffer]> = [
      ['altered body', alterBody(capture, 'alice')],
      ['added Cookie', addHeader(capture, 'Cookie: session=stolen')],
      ['forged client ip', setHeader(capture, 'tunnel-peer-client-ip', '198.51.100.7')],
      ['forged scheme', setHeader(capture, 'tunnel-peer-scheme', 'https')],
      ['changed query', Buffer.from(capture.toString('latin1').replace('POST /transfer ', 'POST /transfer?admin=1 '), 'latin1')],
    ];
    for (const [what, bytes] of attacks) {
      const res = await replay(b.peer!, bytes);
      expect(res.status, what).toBe(403);
      expect(res.header('tunnel-error'), what).toBe('peer_refused');
    }
    expect(seen.complete).not.toContain('held');
    // Each refusal is counted by reason in /metrics.
    const refused = await refusedBy();
    expect(refused.body).toBeGreaterThanOrEqual(1);
    expect(refused.signature).toBeGreaterThanOrEqual(4);
    expect(refused.replay).toBeGreaterThanOrEqual(2);
    // The untouched capture is genuine and still fresh: served once, then a replay.
    const genuine = await replay(b.peer!, capture);
    expect(genuine.status).toBe(200);
    expect(genuine.body).toContain('ok held 19 cookie= ip=127.0.0.1 proto=http');
    expect((await replay(b.peer!, capture)).status).toBe(403);
    expect(seen.complete.filter((m) => m === 'held')).toHaveLength(1);
  });

  it('a streamed (chunked) body altered in flight: the stream to the connector is reset, the origin never sees it complete', async () => {
    rec.mode = 'hold';
    const before = rec.captures.length;
    // No Content-Length: undici sends the stream chunked, and A forwards it as a stream.
    const body = Readable.from([Buffer.from('part-one;'), Buffer.alloc(70_000, 0x78), Buffer.from(';secret-tail')]);
    const r = await request(`${a.publicUrl}/upload`, { method: 'PUT', headers: { host, 'x-marker': 'streamed' }, body });
    await r.body.dump();
    expect(r.statusCode).toBe(502);
    const capture = rec.captures[before]!;
    expect(capture.toString('latin1')).toMatch(/tunnel-peer-body: stream;chunked/i);
    rec.mode = 'pass';
    const res = await replay(b.peer!, alterBody(capture, 'secret-tail'));
    // The head verified, the body did not: whatever the client sees, it is not a 200.
    expect(res.status).not.toBe(200);
    await waitFor(() => seen.aborted.includes('streamed'), 5_000, { message: 'origin request aborted' });
    expect(seen.complete).not.toContain('streamed');
  });
});
