// A connector spoken by hand on packages/protocol, for abuse tests: it
// registers like the stock one, then the test sends raw yamux frames on its
// WebSocket (pings, SYNs) and may stop reading.

import WebSocket from 'ws';
import { ControlDecoder, Flag, FrameType, Session, encodeControl, encodeHeader, wsTransport, zeroMask, type ControlMessage } from '@tunnel/protocol';

export interface EvilConnector {
  ws: WebSocket;
  session: Session;
  /** Raw frames the relay sent after registration, counted by type and flags. */
  frames: { pingAcks: number; goAway: number | null; rsts: number };
}

export interface Upgraded {
  ok: true;
  ws: WebSocket;
}
export interface RefusedUpgrade {
  ok: false;
  status: number;
  body: string;
  /** The Retry-After header, when the relay sent one. */
  retryAfter?: string;
}

/** The WebSocket upgrade alone: open, or the relay's refusal (status and body). */
export function connectRaw(url: string, token: string, connectorId = 'evil', connIndex = 0): Promise<Upgraded | RefusedUpgrade> {
  const ws = new WebSocket(`${url}/v1/connect`, {
    headers: { authorization: `Bearer ${token}`, 'tunnel-connector-id': connectorId, 'tunnel-conn-index': String(connIndex), 'tunnel-version': 'evil/1' },
    generateMask: zeroMask,
  });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ok: true, ws }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      const retryAfter = res.headers['retry-after'];
      res.on('end', () => resolve({ ok: false, status: res.statusCode ?? 0, body, ...(retryAfter !== undefined ? { retryAfter } : {}) }));
    });
    ws.once('error', reject);
  });
}

/**
 * Register on an open WebSocket as a connector would (control stream, then
 * `register`), resolving once the relay answers `registered`.
 */
export async function registerSession(ws: WebSocket, connectorId: string, connIndex: number, sessionOpts: { keepaliveIntervalMs?: number } = {}): Promise<Session> {
  const session = new Session(wsTransport(ws), { client: true, ...sessionOpts });
  session.on('close', () => {});
  const control = session.openStream();
  control.on('error', () => {});
  const dec = new ControlDecoder();
  const registered = new Promise<void>((resolve) => {
    control.on('data', (c: Buffer) => {
      if (dec.push(c).some((m: ControlMessage) => m.type === 'registered')) resolve();
    });
  });
  control.write(encodeControl({ type: 'register', connectorId, connIndex, version: 'evil/1', features: [] }));
  await registered;
  return session;
}

/** Register as a connector (control stream, `register`), then hand back the raw WebSocket. */
export async function evilConnector(url: string, token: string, connectorId = 'evil', connIndex = 0): Promise<EvilConnector> {
  const up = await connectRaw(url, token, connectorId, connIndex);
  if (!up.ok) throw new Error(`evil connector refused: ${up.status} ${up.body}`);
  const ws = up.ws;
  ws.on('error', () => {});
  const session = await registerSession(ws, connectorId, connIndex, { keepaliveIntervalMs: 0 });
  // From here on, count what the relay sends, parsing frames across messages.
  const frames = { pingAcks: 0, goAway: null as number | null, rsts: 0 };
  const hdr = Buffer.alloc(12);
  let fill = 0;
  let skip = 0;
  ws.on('message', (d: Buffer) => {
    let off = 0;
    while (off < d.length) {
      if (skip > 0) {
        const n = Math.min(skip, d.length - off);
        skip -= n;
        off += n;
        continue;
      }
      const n = Math.min(12 - fill, d.length - off);
      d.copy(hdr, fill, off, off + n);
      fill += n;
      off += n;
      if (fill < 12) return;
      fill = 0;
      const type = hdr[1]!;
      const flags = hdr.readUInt16BE(2);
      const length = hdr.readUInt32BE(8);
      if (type === FrameType.Data) skip = length;
      else if (type === FrameType.Ping && flags & Flag.ACK) frames.pingAcks++;
      else if (type === FrameType.GoAway) frames.goAway = length;
      else if (type === FrameType.WindowUpdate && flags & Flag.RST) frames.rsts++;
    }
  });
  return { ws, session, frames };
}

/** `n` frames in one buffer. */
export function frames(n: number, make: (i: number) => Buffer): Buffer {
  const out = Buffer.allocUnsafe(n * 12);
  for (let i = 0; i < n; i++) make(i).copy(out, i * 12);
  return out;
}

export const pingFrame = (i: number): Buffer => encodeHeader(FrameType.Ping, Flag.SYN, 0, i);
/** A SYN from the connector side (odd ids; 1 is its control stream). */
export const synFrame = (i: number): Buffer => encodeHeader(FrameType.WindowUpdate, Flag.SYN, 2 * i + 3, 0);
