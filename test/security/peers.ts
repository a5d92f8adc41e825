// Hostile peers for the security suite, each speaking just enough of its
// protocol to misbehave on purpose: a connector and a relay built on
// packages/protocol, an origin that writes raw bytes, and a raw-socket client
// that reads responses off one keep-alive connection exactly as a browser
// would, so a forged second response would be seen.

import net, { type AddressInfo } from 'node:net';
import http from 'node:http';
import { WebSocket, WebSocketServer } from 'ws';
import {
  ControlDecoder,
  Session,
  decodeRequestHead,
  decodeResponseHead,
  encodeControl,
  encodeRequestHead,
  readHead,
  wsTransport,
  type ControlMessage,
  type RequestHead,
  type ResponseHead,
  type YamuxStream,
} from '@tunnel/protocol';
import { waitFor } from '../harness/wait.js';
import { connectRaw, registerSession } from '../harness/evil-connector.js';

// ---------------------------------------------------------------- a malicious connector

/** A connector speaking our protocol by hand, so it can misbehave on purpose. */
export async function fakeConnector(url: string, token: string, id = 'evil'): Promise<{ session: Session; ws: WebSocket }> {
  const up = await connectRaw(url, token, id, 0);
  if (!up.ok) throw new Error(`fake connector refused: ${up.status} ${up.body}`);
  return { session: await registerSession(up.ws, id, 0), ws: up.ws };
}

/** Serve every stream of `session` with `answer(head)`: raw bytes (a head made by encodeResponseHead, then a body). */
export function serveStreams(session: Session, answer: (head: RequestHead, stream: YamuxStream) => void): void {
  session.on('stream', (s: YamuxStream) => {
    s.on('error', () => {});
    readHead(s, (err, body) => {
      if (err) return void s.destroy();
      s.resume();
      answer(decodeRequestHead(body!), s);
    });
  });
}

// ---------------------------------------------------------------- a malicious relay

export interface RelayAnswer {
  status: number;
  statusText: string;
  headers: Array<[string, string]>;
  body: string;
}

/**
 * A relay that a stock connector registers with (`--relay ws://…
 * --no-discover`): it confirms registration and then sends whatever request
 * heads the test gives it.
 */
export class FakeRelay {
  readonly wss: WebSocketServer;
  private session: Session | null = null;
  private constructor(wss: WebSocketServer) {
    this.wss = wss;
    wss.on('connection', (ws) => {
      const session = new Session(wsTransport(ws), { client: false });
      session.once('stream', (control: YamuxStream) => {
        control.on('error', () => {});
        const dec = new ControlDecoder();
        control.on('data', (c: Buffer) => {
          for (const m of dec.push(c)) {
            if (m.type === 'register') {
              control.write(encodeControl({ type: 'registered', relayId: 'evil-relay', region: 'evil', connectionId: `c${m.connIndex}` }));
              this.session = session;
            }
          }
        });
      });
    });
  }

  static async start(): Promise<FakeRelay> {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, path: '/v1/connect' });
    await new Promise<void>((r) => wss.once('listening', () => r()));
    return new FakeRelay(wss);
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}`;
  }

  async ready(timeoutMs = 15_000): Promise<void> {
    await waitFor(() => this.session !== null, timeoutMs, { message: 'a connector registered with the fake relay' });
  }

  /**
   * Send raw head bytes (and a body) on a new stream; resolves with the
   * connector's answer, or 'reset' if it reset the stream instead.
   */
  send(headBytes: Buffer, body?: Buffer, timeoutMs = 10_000): Promise<RelayAnswer | 'reset'> {
    const s = this.session!.openStream();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error('fake relay: no answer from the connector in time'));
      }, timeoutMs);
      const done = (v: RelayAnswer | 'reset') => {
        clearTimeout(timer);
        resolve(v);
      };
      s.on('error', () => done('reset'));
      s.write(headBytes);
      s.end(body);
      readHead(s, (err, hb) => {
        if (err) return done('reset');
        let rh: ResponseHead;
        try {
          rh = decodeResponseHead(hb!);
        } catch (e) {
          clearTimeout(timer);
          return reject(e as Error);
        }
        const parts: Buffer[] = [];
        s.on('data', (c: Buffer) => parts.push(c));
        s.once('end', () => done({ status: rh.status, statusText: rh.statusText, headers: rh.headers, body: Buffer.concat(parts).toString('latin1') }));
        s.once('close', () => done('reset'));
        s.resume();
      });
    });
  }

  request(head: Partial<RequestHead>, body?: Buffer): Promise<RelayAnswer | 'reset'> {
    const full: RequestHead = {
      kind: 'http',
      method: 'GET',
      path: '/',
      host: 'app.test',
      scheme: 'http',
      clientIp: '203.0.113.9',
      requestId: `evil${Math.random().toString(16).slice(2, 10)}`,
      headers: [['Host', head.host ?? 'app.test']],
      ...head,
    };
    return this.send(encodeRequestHead(full), body);
  }

  close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    return new Promise((r) => this.wss.close(() => r()));
  }
}

// ---------------------------------------------------------------- an origin that speaks broken HTTP

/**
 * An origin on a raw TCP server: for each request head it reads, it writes
 * the bytes `answer(path)` returns (keep-alive: several requests may come on
 * one connection). `close: true` ends the connection after the answer.
 */
export async function rawOrigin(answer: (path: string, head: string) => { bytes: string; close?: boolean }): Promise<{ url: string; port: number; paths: string[]; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const paths: string[] = [];
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = '';
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      buf += d;
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        // Request bodies are not used by these cases: drop a Content-Length's worth.
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        if (cl) buf = buf.slice(Number(cl[1]));
        const path = head.split(' ')[1] ?? '';
        paths.push(path);
        const a = answer(path, head);
        sock.write(Buffer.from(a.bytes, 'latin1'));
        if (a.close) sock.end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    paths,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

// ---------------------------------------------------------------- a raw-socket client

export interface ParsedResponse {
  status: number;
  statusLine: string;
  headers: Array<[string, string]>;
  body: string;
  header(name: string): string | undefined;
}

/**
 * One client connection to a relay's public port, reading responses with
 * HTTP/1.1 framing as a browser would: whatever follows a response on the
 * connection is read as the next one. `next()` resolves with the next whole
 * response, or 'closed' when the connection ends first.
 */
export class RawClient {
  private buf = '';
  private ended = false;
  private readonly sock: net.Socket;
  private wake: (() => void) | null = null;
  readonly connected: Promise<void>;

  constructor(port: number) {
    this.sock = net.connect({ host: '127.0.0.1', port });
    // Settles on close too: a refused connection is read as 'closed', never waited on.
    this.connected = new Promise((r) => {
      this.sock.once('connect', () => r());
      this.sock.once('close', () => r());
    });
    this.sock.setEncoding('latin1');
    this.sock.on('data', (d: string) => {
      this.buf += d;
      this.wake?.();
    });
    this.sock.on('error', () => {});
    this.sock.on('close', () => {
      this.ended = true;
      this.wake?.();
    });
  }

  send(bytes: string): void {
    this.sock.write(Buffer.from(bytes, 'latin1'));
  }

  /** Everything received and not yet parsed. */
  get pending(): string {
    return this.buf;
  }

  get closed(): boolean {
    return this.ended;
  }

  async next(o: { method?: string; timeoutMs?: number } = {}): Promise<ParsedResponse | 'closed'> {
    const deadline = Date.now() + (o.timeoutMs ?? 10_000);
    for (;;) {
      const r = this.tryParse(o.method ?? 'GET');
      if (r !== null) return r;
      if (this.ended) return 'closed';
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`RawClient: no whole response in time; have ${JSON.stringify(this.buf.slice(0, 300))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          this.wake = null;
          resolve();
        };
      });
    }
  }

  private tryParse(method: string): ParsedResponse | null {
    const end = this.buf.indexOf('\r\n\r\n');
    if (end === -1) return null;
    const lines = this.buf.slice(0, end).split('\r\n');
    const statusLine = lines.shift()!;
    const headers = lines.map((l): [string, string] => {
      const i = l.indexOf(':');
      return [l.slice(0, i), l.slice(i + 1).trim()];
    });
    const header = (n: string) => headers.find(([k]) => k.toLowerCase() === n.toLowerCase())?.[1];
    const status = Number(statusLine.split(' ')[1]);
    let rest = this.buf.slice(end + 4);
    let body: string;
    if (method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200)) body = '';
    else if (/chunked/i.test(header('transfer-encoding') ?? '')) {
      let out = '';
      let i = 0;
      for (;;) {
        const eol = rest.indexOf('\r\n', i);
        if (eol === -1) return null;
        const size = parseInt(rest.slice(i, eol), 16);
        if (Number.isNaN(size)) throw new Error(`RawClient: bad chunk size ${JSON.stringify(rest.slice(i, eol))}`);
        if (size === 0) {
          if (rest.length < eol + 4) return null;
          rest = rest.slice(eol + 4);
          break;
        }
        if (rest.length < eol + 2 + size + 2) return null;
        out += rest.slice(eol + 2, eol + 2 + size);
        i = eol + 2 + size + 2;
      }
      body = out;
    } else if (header('content-length') !== undefined) {
      const n = Number(header('content-length'));
      if (rest.length < n) return null;
      body = rest.slice(0, n);
      rest = rest.slice(n);
    } else {
      // Close-delimited.
      if (!this.ended) return null;
      body = rest;
      rest = '';
    }
    this.buf = rest;
    return { status, statusLine, headers, body, header };
  }

  close(): void {
    this.sock.destroy();
  }
}

/** One request on a fresh connection: the answer, or 'closed'. */
export async function rawOnce(port: number, bytes: string, o: { method?: string; timeoutMs?: number } = {}): Promise<ParsedResponse | 'closed'> {
  const c = new RawClient(port);
  try {
    await c.connected;
    c.send(bytes);
    return await c.next(o);
  } finally {
    c.close();
  }
}

/** A WebSocket-style upgrade request through node's client: resolves with the answer's head, never throws. */
export function upgradeRequest(port: number, headers: Record<string, string | string[]>, path = '/ws'): Promise<{ status: number; headers: http.IncomingHttpHeaders; raw: string[] } | 'error'> {
  return new Promise((resolve) => {
    const r = http.request({
      host: '127.0.0.1',
      port,
      path,
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers },
    });
    r.setTimeout(10_000, () => r.destroy(new Error('timeout')));
    r.on('upgrade', (res, sock) => {
      sock.destroy();
      resolve({ status: res.statusCode ?? 0, headers: res.headers, raw: res.rawHeaders });
    });
    r.on('response', (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, headers: res.headers, raw: res.rawHeaders });
    });
    r.on('error', () => resolve('error'));
    r.end();
  });
}
