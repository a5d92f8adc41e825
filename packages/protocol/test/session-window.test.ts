// The receive window is enforced, not just advertised: a peer that sends more
// than the window we granted on a stream (one frame or several, before or
// after our ACK's bonus) ends the session with a protocol error and a
// GoAway(1); exactly the window is fine, and bytes the consumer reads are
// granted again. (A receiver that merely trusts the peer would buffer without
// bound: DESIGN §11.)
import { describe, it, expect } from 'vitest';
import { Flag, FrameType, GoAwayCode, Session, type SessionError, type YamuxStream } from '../src/index.js';
import { CaptureTransport, frame, nextEvent, parseFrames, turn } from './helpers.js';

const INITIAL = 256 * 1024;

function server(maxStreamWindow: number) {
  const cap = new CaptureTransport();
  const s = new Session(cap, { client: false, keepaliveIntervalMs: 0, ackDelayMs: 0, maxStreamWindow, maxSessionBuffered: 64 * 1024 * 1024 });
  const streams: YamuxStream[] = [];
  s.on('stream', (x: YamuxStream) => {
    streams.push(x);
    x.on('error', () => {});
  });
  let closedWith: string | undefined;
  s.on('close', (e?: SessionError) => (closedWith = e ? e.code : 'clean'));
  return { cap, s, streams, closed: () => closedWith };
}

/** `n` payload bytes on stream `id` in frames of at most `piece` bytes. */
function data(id: number, n: number, piece = 64 * 1024, firstFlags = 0): Buffer {
  const out: Buffer[] = [];
  for (let sent = 0, k = 0; sent < n; k++) {
    const len = Math.min(piece, n - sent);
    out.push(frame(FrameType.Data, k === 0 ? firstFlags : 0, id, len, Buffer.alloc(len, 7)));
    sent += len;
  }
  return Buffer.concat(out);
}

function endsWithProtocolGoAway(cap: CaptureTransport): boolean {
  const { frames } = parseFrames(cap.output());
  const last = frames[frames.length - 1];
  return !!last && last.type === FrameType.GoAway && last.length === GoAwayCode.ProtocolError && cap.ended;
}

describe('receive window enforcement', () => {
  it('exactly the initial window on an unread stream is accepted', async () => {
    const t = server(INITIAL);
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    t.cap.feed(data(1, INITIAL));
    await turn();
    expect(t.closed()).toBeUndefined();
    expect(t.streams[0]!.receiveBuffered).toBe(INITIAL);
    t.s.destroy();
  });

  it('one byte past the window, spread over several frames, is a protocol error with GoAway(1)', async () => {
    const t = server(INITIAL);
    const closed = nextEvent(t.s, 'close');
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    t.cap.feed(data(1, INITIAL + 1, 60_000));
    const [err] = (await closed) as [SessionError];
    expect(err.code).toBe('PROTOCOL_ERROR');
    expect(err.message).toMatch(/exceeded its receive window/);
    expect(endsWithProtocolGoAway(t.cap)).toBe(true);
  });

  it('the overrun is judged on the header: a frame announcing too much fails before its payload arrives', async () => {
    const t = server(INITIAL);
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    t.cap.feed(frame(FrameType.Data, 0, 1, INITIAL + 1)); // header only
    await turn();
    expect(t.closed()).toBe('PROTOCOL_ERROR');
    expect(endsWithProtocolGoAway(t.cap)).toBe(true);
  });

  it('with a bonus window granted in our ACK: the whole bonus is accepted, one byte more is not', async () => {
    const big = 1024 * 1024;
    const ok = server(big);
    ok.cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    await turn(); // our ACK (with the bonus) goes out
    const ack = parseFrames(ok.cap.output()).frames.find((f) => f.streamId === 1 && (f.flags & Flag.ACK) !== 0);
    expect(ack?.length).toBe(big - INITIAL);
    ok.cap.feed(data(1, big));
    await turn();
    expect(ok.closed()).toBeUndefined();
    ok.s.destroy();

    const over = server(big);
    over.cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    await turn();
    over.cap.feed(data(1, big + 1));
    await turn();
    expect(over.closed()).toBe('PROTOCOL_ERROR');
    expect(endsWithProtocolGoAway(over.cap)).toBe(true);
  });

  it('bytes the consumer reads are granted again: the peer may then send that much more, and no more', async () => {
    const t = server(INITIAL);
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    t.cap.feed(data(1, INITIAL));
    await turn();
    const st = t.streams[0]!;
    // The consumer reads 100 KiB: that much window comes back (at once or batched, but all of it before more is expected).
    let read = 0;
    while (read < 100 * 1024) {
      const b = st.read(Math.min(16 * 1024, 100 * 1024 - read)) as Buffer | null;
      if (!b) break;
      read += b.length;
    }
    expect(read).toBe(100 * 1024);
    await turn();
    const granted = parseFrames(t.cap.output())
      .frames.filter((f) => f.type === FrameType.WindowUpdate && f.streamId === 1)
      .reduce((a, f) => a + f.length, 0);
    expect(granted).toBeLessThanOrEqual(read);
    t.cap.feed(data(1, granted));
    await turn();
    expect(t.closed()).toBeUndefined();
    t.cap.feed(data(1, 1));
    await turn();
    expect(t.closed()).toBe('PROTOCOL_ERROR');
  });

  it('data after the peer FIN is a protocol error too, and says so', async () => {
    const t = server(INITIAL);
    const closed = nextEvent(t.s, 'close');
    t.cap.feed(frame(FrameType.Data, Flag.SYN | Flag.FIN, 1, 3, Buffer.from('abc')));
    t.cap.feed(frame(FrameType.Data, 0, 1, 3, Buffer.from('def')));
    const [err] = (await closed) as [SessionError];
    expect(err.code).toBe('PROTOCOL_ERROR');
    expect(err.message).toMatch(/data after FIN on stream 1/);
  });

  it('window updates are batched: none until half the window is read, then one for all of it; none after the peer FIN', async () => {
    const t = server(INITIAL);
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    t.cap.feed(data(1, INITIAL));
    await turn();
    const st = t.streams[0]!;
    expect(st.state).toBe('established'); // handed to the owner: accepted
    expect(st.remoteEnded).toBe(false);
    const updates = () => parseFrames(t.cap.output()).frames.filter((f) => f.type === FrameType.WindowUpdate && f.streamId === 1 && (f.flags & Flag.ACK) === 0);
    const readN = (n: number) => {
      let got = 0;
      while (got < n) {
        const b = st.read(Math.min(8 * 1024, n - got)) as Buffer | null;
        if (!b) break;
        got += b.length;
      }
      return got;
    };
    expect(readN(INITIAL / 2 - 1024)).toBe(INITIAL / 2 - 1024);
    await turn();
    expect(st.receiveBuffered).toBe(INITIAL / 2 + 1024);
    expect(updates()).toEqual([]);
    expect(readN(1024)).toBe(1024);
    await turn();
    expect(st.receiveBuffered).toBe(INITIAL / 2);
    expect(updates().map((f) => f.length)).toEqual([INITIAL / 2]);
    // After the peer's FIN nothing more can arrive: reading the rest grants nothing.
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.FIN, 1, 0));
    await turn();
    expect(st.remoteEnded).toBe(true);
    expect(st.state).toBe('remote_closed');
    expect(readN(INITIAL / 2)).toBe(INITIAL / 2);
    await turn();
    expect(updates()).toHaveLength(1);
    expect(t.s.bufferedBytes).toBe(0);
    t.s.destroy();
  });

  it('a peer RST fails the stream with a StreamResetError that says so', async () => {
    const t = server(INITIAL);
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    await turn();
    const st = t.streams[0]!;
    const err = new Promise<Error & { code?: string }>((r) => st.once('error', r));
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.RST, 1, 0));
    const e = await err;
    expect(e.name).toBe('StreamResetError');
    expect(e.message).toBe('stream reset by peer');
    expect(e.code).toBe('ERR_STREAM_RESET');
    t.s.destroy();
  });

  it('a second FIN from the peer is a protocol error naming the stream and its state', async () => {
    const t = server(INITIAL);
    const closed = nextEvent(t.s, 'close');
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.FIN, 1, 0));
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.FIN, 1, 0));
    const [err] = (await closed) as [SessionError];
    expect(err.code).toBe('PROTOCOL_ERROR');
    expect(err.message).toBe('unexpected FIN on stream 1 (remote_closed)');
  });
});
