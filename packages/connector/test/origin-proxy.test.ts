// OriginProxy against a real origin on 127.0.0.1, reached over a real yamux
// session on the in-memory duplex pair (the relay's end opens the stream, as
// in production): request framing to the origin, response framing back, and
// the error answer when the origin cannot be reached.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import {
  Session,
  decodeResponseHead,
  duplexTransport,
  encodeRequestHead,
  memoryDuplexPair,
  readHead,
  type RequestHead,
  type ResponseHead,
  type YamuxStream,
} from '@tunnel/protocol';
import { OriginProxy } from '../src/origin/origin-proxy.js';
import { compileIngress } from '../src/ingress/ingress.js';
import { ORIGIN_REQUEST_DEFAULTS, singleServiceIngress } from '../src/ingress/config.js';

const log = pino({ level: 'silent' });

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

let origin: http.Server;
let originUrl: string;
const seen: Seen[] = [];

beforeAll(async () => {
  origin = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      res.writeHead(201, 'Made', { 'content-type': 'text/plain', 'x-origin': 'yes', connection: 'x-secret', 'x-secret': 'hop' });
      res.end(`got ${req.method} ${req.url} ${body.length}`);
    });
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originUrl = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => origin.close(() => r())));

/** A relay-side session and a connector-side session whose streams go to `proxy`. */
function pair(proxy: OriginProxy): { relay: Session; close(): void } {
  const [a, b] = memoryDuplexPair();
  const connector = new Session(duplexTransport(a), { client: true, keepaliveIntervalMs: 0 });
  const relay = new Session(duplexTransport(b), { client: false, keepaliveIntervalMs: 0 });
  connector.on('stream', (s: YamuxStream) => proxy.handle(s));
  return {
    relay,
    close() {
      relay.close();
      connector.close();
    },
  };
}

function head(o: Partial<RequestHead> = {}): RequestHead {
  // The relay passes the client's Host on in the headers too.
  return { kind: 'http', method: 'GET', path: '/', host: 'app.test', scheme: 'https', clientIp: '203.0.113.9', requestId: 'req-1', ...o, headers: [['host', 'app.test'], ...(o.headers ?? [])] };
}

/** Sends one request over a new stream; resolves with the response head and body (bounded). */
function exchange(relay: Session, h: RequestHead, body?: Buffer[]): Promise<{ head: ResponseHead; body: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no response within 10 s')), 10_000);
    const s = relay.openStream();
    s.on('error', reject);
    s.write(encodeRequestHead(h));
    for (const c of body ?? []) s.write(c);
    s.end();
    readHead(s, (err, buf) => {
      if (err) return reject(err);
      const rh = decodeResponseHead(buf!);
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('end', () => {
        clearTimeout(timer);
        resolve({ head: rh, body: Buffer.concat(chunks).toString() });
      });
      s.resume();
    });
  });
}

const header = (h: ResponseHead, name: string) => h.headers.find(([k]) => k.toLowerCase() === name)?.[1];

describe('OriginProxy', () => {
  it('frames a request to the origin and its answer back: method, path, body, forwarding headers; hop-by-hop dropped both ways', async () => {
    const proxy = new OriginProxy(compileIngress(singleServiceIngress(originUrl), ORIGIN_REQUEST_DEFAULTS), log);
    const p = pair(proxy);
    try {
      seen.length = 0;
      const r = await exchange(
        p.relay,
        head({
          method: 'POST',
          path: '/up?x=1',
          headers: [
            ['content-type', 'text/plain'],
            ['x-real-ip', '6.6.6.6'], // the client's claim: ours to set
            ['tunnel-something', 'forged'], // the tunnel's own namespace: never from a client
            ['transfer-encoding', 'chunked'],
          ],
        }),
        [Buffer.from('hello '), Buffer.from('origin')],
      );
      expect(r.head.status, r.body).toBe(201);
      expect(r.body).toBe('got POST /up?x=1 12');
      expect(header(r.head, 'x-origin')).toBe('yes');
      // Named in the origin's Connection header: stops at this hop.
      expect(header(r.head, 'x-secret')).toBeUndefined();
      expect(header(r.head, 'connection')).toBeUndefined();
      const got = seen[0]!;
      expect(got.method).toBe('POST');
      expect(got.body).toBe('hello origin');
      expect(got.headers['host']).toBe('app.test');
      expect(got.headers['x-real-ip']).toBe('203.0.113.9');
      expect(got.headers['x-forwarded-proto']).toBe('https');
      expect(got.headers['tunnel-something']).toBeUndefined();
      expect(got.headers['tunnel-request-id']).toBe('req-1');
    } finally {
      p.close();
    }
  });

  it('disableChunkedEncoding: a body of unknown length reaches the origin buffered, with a Content-Length and no chunking', async () => {
    const proxy = new OriginProxy(compileIngress(singleServiceIngress(originUrl), { ...ORIGIN_REQUEST_DEFAULTS, disableChunkedEncoding: true }), log);
    const p = pair(proxy);
    try {
      seen.length = 0;
      // 1 MiB: more than the stream window and the body pipe hold, so a streamed body could not have ended (and been measured) before the origin request starts.
      const parts = Array.from({ length: 16 }, (_, i) => Buffer.alloc(64 * 1024, 97 + i));
      const r = await exchange(p.relay, head({ method: 'PUT', path: '/file', headers: [['transfer-encoding', 'chunked']] }), parts);
      expect(r.head.status, r.body).toBe(201);
      expect(seen[0]!.body).toBe(Buffer.concat(parts).toString());
      expect(seen[0]!.headers['content-length']).toBe(String(1024 * 1024));
      expect(seen[0]!.headers['transfer-encoding']).toBeUndefined();
    } finally {
      p.close();
    }
  });

  it('an origin that refuses the connection is a 502 with the error code, source and request id, and the process goes on', async () => {
    // Port 9 (discard) is privileged and never bound here: a port freed by closing a server could be taken by a parallel test file.
    const proxy = new OriginProxy(compileIngress(singleServiceIngress('http://127.0.0.1:9'), ORIGIN_REQUEST_DEFAULTS), log);
    const p = pair(proxy);
    try {
      const r = await exchange(p.relay, head({ requestId: 'req-refused', headers: [['accept', 'application/json']] }));
      expect(r.head.status, r.body).toBe(502);
      expect(header(r.head, 'tunnel-error')).toBe('origin_refused');
      expect(header(r.head, 'tunnel-error-source')).toBe('origin');
      const body = JSON.parse(r.body) as { error: { status: number; code: string; source: string; requestId: string } };
      expect(body.error).toMatchObject({ status: 502, code: 'origin_refused', source: 'origin', requestId: 'req-refused' });
      // The same proxy serves the next request.
      const again = await exchange(p.relay, head({ requestId: 'req-2' }));
      expect(again.head.status).toBe(502);
    } finally {
      p.close();
    }
  });
});
