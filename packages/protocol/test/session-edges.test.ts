// The edges of the session's inbound state machine, fed raw frames: each
// illegal frame (on stream 0, on a stream id where only 0 is legal, a SYN
// with our id parity or for a live stream, an unknown type) ends the session
// with a protocol error naming it and a GoAway(1); each ceiling holds exactly
// at its value (frame length, session buffer, accept backlog, stream count);
// GoAway, ping answers and zero-length frames behave as the spec says.
import { describe, it, expect, vi } from 'vitest';
import { Flag, FrameType, GoAwayCode, Session, type SessionError, type SessionOptions, type YamuxStream } from '../src/index.js';
import { CaptureTransport, frame, parseFrames, turn } from './helpers.js';

function server(opts: Partial<SessionOptions> = {}, listen = true) {
  const cap = new CaptureTransport();
  const s = new Session(cap, { client: false, keepaliveIntervalMs: 0, ackDelayMs: 0, ...opts });
  const streams: YamuxStream[] = [];
  const streamErrors: Error[] = [];
  if (listen) {
    s.on('stream', (x: YamuxStream) => {
      streams.push(x);
      x.on('error', (e: Error) => streamErrors.push(e));
    });
  }
  const closes: Array<SessionError | undefined> = [];
  const goaways: number[] = [];
  s.on('close', (e?: SessionError) => closes.push(e));
  s.on('goaway', (c: number) => goaways.push(c));
  const frames = () => parseFrames(cap.output()).frames;
  return { cap, s, streams, streamErrors, closes, goaways, frames };
}

type Server = ReturnType<typeof server>;

/** The session ended with PROTOCOL_ERROR saying `message`, its last frame a GoAway(1), the transport ended. */
function expectProtocolError(t: Server, message: RegExp): void {
  expect(t.closes).toHaveLength(1);
  expect(t.closes[0]!.code).toBe('PROTOCOL_ERROR');
  expect(t.closes[0]!.message).toMatch(message);
  const last = t.frames().at(-1);
  expect(last).toMatchObject({ type: FrameType.GoAway, streamId: 0, length: GoAwayCode.ProtocolError });
  expect(t.cap.ended).toBe(true);
}

const syn = (id: number) => frame(FrameType.WindowUpdate, Flag.SYN, id, 0);
const data = (id: number, n: number, flags = 0) => frame(FrameType.Data, flags, id, n, Buffer.alloc(n, 1));
const rstsFor = (t: Server) => t.frames().filter((f) => f.flags & Flag.RST).map((f) => f.streamId);

describe('illegal frames end the session with a protocol error that names them', () => {
  it('a Data frame on stream 0', () => {
    const t = server();
    t.cap.feed(frame(FrameType.Data, 0, 0, 0));
    expectProtocolError(t, /^data frame on stream 0$/);
  });

  it('a window update on stream 0', () => {
    const t = server();
    t.cap.feed(frame(FrameType.WindowUpdate, 0, 0, 100));
    expectProtocolError(t, /^window update on stream 0$/);
  });

  it('a ping or a GoAway on a stream id', () => {
    const p = server();
    p.cap.feed(frame(FrameType.Ping, Flag.SYN, 1, 7));
    expectProtocolError(p, /^ping on a stream id$/);
    expect(p.frames().filter((f) => f.type === FrameType.Ping)).toEqual([]); // not answered
    const g = server();
    g.cap.feed(frame(FrameType.GoAway, 0, 1, GoAwayCode.Normal));
    expectProtocolError(g, /^go away on a stream id$/);
    expect(g.goaways).toEqual([]);
  });

  it('an unknown frame type', () => {
    const t = server();
    t.cap.feed(frame(4, 0, 0, 0));
    expectProtocolError(t, /^unknown frame type 4$/);
  });

  it('a SYN with our own id parity, and a SYN for a stream that is live', () => {
    const even = server();
    even.cap.feed(syn(2));
    expectProtocolError(even, /^peer opened stream 2 with our id parity$/);
    expect(even.s.streamCount).toBe(0);
    const again = server();
    again.cap.feed(syn(1));
    expect(again.streams.map((x) => x.id)).toEqual([1]);
    again.cap.feed(syn(1));
    expectProtocolError(again, /^peer reopened live stream 1$/);
    // A client session expects even ids from its peer.
    const cap = new CaptureTransport();
    const client = new Session(cap, { client: true, keepaliveIntervalMs: 0, ackDelayMs: 0 });
    const got: number[] = [];
    client.on('stream', (x: YamuxStream) => {
      got.push(x.id);
      x.on('error', () => {});
    });
    cap.feed(syn(2));
    expect(got).toEqual([2]);
    expect(client.closed).toBe(false);
    client.destroy();
  });
});

describe('ceilings hold exactly at their value', () => {
  it('a Data frame of exactly maxFrameLength is accepted', () => {
    const t = server({ maxFrameLength: 1000 });
    t.cap.feed(syn(1));
    t.cap.feed(data(1, 1000));
    expect(t.closes).toEqual([]);
    expect(t.streams[0]!.receiveBuffered).toBe(1000);
    t.cap.feed(data(1, 1001));
    expectProtocolError(t, /^data frame of 1001 bytes exceeds 1000$/);
  });

  it('maxSessionBuffered: unread bytes up to the limit are kept; the stream whose frame would pass it is reset, alone', async () => {
    const t = server({ maxSessionBuffered: 1000 });
    t.cap.feed(Buffer.concat([syn(1), syn(3), syn(5), data(1, 600), data(3, 400)]));
    expect(t.s.bufferedBytes).toBe(1000);
    expect(t.streams.map((x) => x.destroyed)).toEqual([false, false, false]);
    t.cap.feed(data(5, 1));
    expect(t.streams.map((x) => x.destroyed)).toEqual([false, false, true]);
    await turn(); // the stream's 'error' is emitted on the next tick
    expect(t.streamErrors.map((e) => e.message)).toEqual(['session receive buffer limit reached']);
    expect(t.s.bufferedBytes).toBe(1000);
    expect(t.closes).toEqual([]);
    t.s.destroy();
  });

  it('maxSessionBuffered: a zero-length frame on a full session resets nothing', () => {
    const t = server({ maxSessionBuffered: 100 });
    t.cap.feed(Buffer.concat([syn(1), syn(3), data(1, 100)]));
    t.cap.feed(frame(FrameType.Data, 0, 3, 0));
    expect(t.streams.map((x) => x.destroyed)).toEqual([false, false]);
    t.s.destroy();
  });

  it('acceptBacklog: exactly that many wait for a listener, the next is reset', async () => {
    const t = server({ acceptBacklog: 2 }, false);
    t.cap.feed(Buffer.concat([syn(1), syn(3), syn(5)]));
    expect(t.s.streamCount).toBe(2);
    await turn();
    expect(rstsFor(t)).toEqual([5]);
    t.s.destroy();
  });

  it('acceptBacklog bounds only the streams waiting for a listener: with one listening, a SYN is accepted even while the backlog is full', () => {
    const t = server({ acceptBacklog: 2 }, false);
    t.cap.feed(Buffer.concat([syn(1), syn(3)]));
    const got: number[] = [];
    t.s.on('stream', (x: YamuxStream) => {
      got.push(x.id);
      x.on('error', () => {});
    });
    // Before the microtask that hands out the backlog runs, another SYN.
    t.cap.feed(syn(5));
    expect(got).toEqual([5]);
    expect(t.s.streamCount).toBe(3);
    t.s.destroy();
  });

  it('maxStreams counts open streams: exactly that many are accepted, the next is reset', async () => {
    const t = server({ maxStreams: 2 });
    t.cap.feed(Buffer.concat([syn(1), syn(3), syn(5)]));
    expect(t.streams.map((x) => x.id)).toEqual([1, 3]);
    await turn();
    expect(rstsFor(t)).toEqual([5]);
    // One ends (reset by the peer): its slot is free again.
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.RST, 1, 0));
    t.cap.feed(syn(7));
    expect(t.streams.map((x) => x.id)).toEqual([1, 3, 7]);
    t.s.destroy();
  });
});

describe('zero-length frames and close flags', () => {
  it('a zero-length Data frame with FIN ends the stream for reading', async () => {
    const t = server();
    t.cap.feed(Buffer.concat([syn(1), data(1, 3), frame(FrameType.Data, Flag.FIN, 1, 0)]));
    const st = t.streams[0]!;
    const chunks: Buffer[] = [];
    st.on('data', (b: Buffer) => chunks.push(b));
    await new Promise<void>((resolve) => st.once('end', () => resolve()));
    expect(Buffer.concat(chunks)).toEqual(Buffer.alloc(3, 1));
    expect(t.closes).toEqual([]);
    t.s.destroy();
  });

  it('a Data frame after the peer FIN, even an empty one, is a protocol error that says so', () => {
    const t = server();
    t.cap.feed(Buffer.concat([syn(1), frame(FrameType.Data, Flag.FIN, 1, 0), frame(FrameType.Data, 0, 1, 0)]));
    expectProtocolError(t, /^data after FIN on stream 1$/);
  });

  it('a FIN on a window update ends the stream; a second FIN is a protocol error', async () => {
    const t = server();
    t.cap.feed(Buffer.concat([syn(1), frame(FrameType.WindowUpdate, Flag.FIN, 1, 0)]));
    const st = t.streams[0]!;
    st.resume();
    await new Promise<void>((resolve) => st.once('end', () => resolve()));
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.FIN, 1, 0));
    expectProtocolError(t, /^unexpected FIN on stream 1 \(remote_closed\)$/);
  });

  it('a window update with RST resets the stream and frees it; later frames for it are dropped', async () => {
    const t = server();
    t.cap.feed(Buffer.concat([syn(1), frame(FrameType.WindowUpdate, Flag.RST, 1, 0)]));
    expect(t.streams[0]!.destroyed).toBe(true);
    expect(t.s.streamCount).toBe(0);
    t.cap.feed(data(1, 10));
    t.cap.feed(frame(FrameType.WindowUpdate, 0, 1, 100));
    expect(t.closes).toEqual([]);
    expect(t.s.bufferedBytes).toBe(0);
    t.s.destroy();
  });
});

describe('GoAway from the peer', () => {
  it('a normal GoAway keeps the session and its streams; a second GoAway is ignored', () => {
    const t = server();
    t.cap.feed(syn(1));
    t.cap.feed(frame(FrameType.GoAway, 0, 0, GoAwayCode.Normal));
    expect(t.goaways).toEqual([GoAwayCode.Normal]);
    expect(t.s.remoteGoAway).toBe(GoAwayCode.Normal);
    expect(t.s.canOpen).toBe(false);
    expect(t.s.closed).toBe(false);
    t.cap.feed(frame(FrameType.GoAway, 0, 0, GoAwayCode.ProtocolError));
    expect(t.goaways).toEqual([GoAwayCode.Normal]);
    expect(t.s.remoteGoAway).toBe(GoAwayCode.Normal);
    expect(t.s.closed).toBe(false);
    // Existing streams still carry data.
    t.cap.feed(data(1, 5));
    expect(t.streams[0]!.receiveBuffered).toBe(5);
    t.s.destroy();
  });

  it('an internal-error GoAway closes the session with GOAWAY naming the code', () => {
    const t = server();
    t.cap.feed(frame(FrameType.GoAway, 0, 0, GoAwayCode.InternalError));
    expect(t.goaways).toEqual([GoAwayCode.InternalError]);
    expect(t.closes).toHaveLength(1);
    expect(t.closes[0]!.code).toBe('GOAWAY');
    expect(t.closes[0]!.message).toMatch(/internal error/);
    // A clean end of the byte stream (what was queued is flushed), not a hard drop.
    expect(t.cap.ended).toBe(true);
    expect(t.cap.destroyed).toBe(false);
  });
});

describe('ping', () => {
  it('a ping ACK nobody asked for is ignored; our own ping resolves with the round trip and sets rtt', async () => {
    const t = server();
    t.cap.feed(frame(FrameType.Ping, Flag.ACK, 0, 12345));
    expect(t.closes).toEqual([]);
    expect(t.s.rtt).toBe(-1);
    const rtt = t.s.ping(5000);
    await turn();
    const sent = t.frames().filter((f) => f.type === FrameType.Ping);
    expect(sent).toEqual([expect.objectContaining({ flags: Flag.SYN, streamId: 0 })]);
    t.cap.feed(frame(FrameType.Ping, Flag.ACK, 0, sent[0]!.length));
    const ms = await rtt;
    expect(ms).toBeGreaterThanOrEqual(0);
    expect(t.s.rtt).toBe(ms);
    // The same answer again is late: ignored.
    t.cap.feed(frame(FrameType.Ping, Flag.ACK, 0, sent[0]!.length));
    expect(t.s.rtt).toBe(ms);
    t.s.destroy();
  });

  it('a ping with neither SYN nor ACK is ignored: not answered, and it does not answer our own ping', async () => {
    const t = server();
    t.cap.feed(frame(FrameType.Ping, 0, 0, 9));
    await turn();
    expect(t.frames()).toEqual([]);
    expect(t.closes).toEqual([]);
    const pending = t.s.ping(5000);
    pending.catch(() => {});
    await turn();
    const opaque = t.frames().find((f) => f.type === FrameType.Ping)!.length;
    t.cap.feed(frame(FrameType.Ping, 0, 0, opaque));
    expect(t.s.rtt).toBe(-1);
    t.cap.feed(frame(FrameType.Ping, Flag.ACK, 0, opaque));
    expect(await pending).toBeGreaterThanOrEqual(0);
    t.s.destroy();
  });

  it('keepalive sends no second ping while one is unanswered', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'setTimeout', 'clearTimeout'] });
    try {
      const t = server({ keepaliveIntervalMs: 100, keepaliveTimeoutMs: 10_000 });
      vi.advanceTimersByTime(550); // five intervals
      await turn(); // the batch flush (setImmediate is real)
      expect(t.frames().filter((f) => f.type === FrameType.Ping)).toHaveLength(1);
      expect(t.closes).toEqual([]);
      t.s.destroy();
    } finally {
      vi.useRealTimers();
    }
  });

  it('pingAnswersPerSecond 0 answers every ping', async () => {
    const t = server({ pingAnswersPerSecond: 0 });
    for (let i = 0; i < 300; i++) t.cap.feed(frame(FrameType.Ping, Flag.SYN, 0, i));
    await turn();
    expect(t.frames().filter((f) => f.type === FrameType.Ping && f.flags === Flag.ACK)).toHaveLength(300);
    t.s.destroy();
  });
});
