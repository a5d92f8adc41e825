// One stream's life as seen on the wire, against a session fed raw frames:
// both half-closes in either order end in 'closed' and free the stream with
// no RST; a write larger than the peer's window goes out in frames of at most
// 256 KiB, stops at the window and resumes on the peer's window update, its
// callback only after the last byte is sent.
import { describe, it, expect } from 'vitest';
import { Flag, FrameType, Session, type YamuxStream } from '../src/index.js';
import { CaptureTransport, frame, parseFrames, turn, waitFor } from './helpers.js';

const INITIAL = 256 * 1024;

function server() {
  const cap = new CaptureTransport();
  // maxStreamWindow = the initial window, so reading half of it earns a window update.
  const s = new Session(cap, { client: false, keepaliveIntervalMs: 0, ackDelayMs: 0, maxStreamWindow: INITIAL });
  const streams: YamuxStream[] = [];
  s.on('stream', (x: YamuxStream) => {
    streams.push(x);
    x.on('error', () => {});
  });
  let retired = 0;
  s.on('streamclosed', () => retired++);
  const out = (id: number) => parseFrames(cap.output()).frames.filter((f) => f.streamId === id);
  return { cap, s, streams, out, retired: () => retired };
}

describe('stream half-close', () => {
  it('we end first, then the peer FINs: closed, freed, remoteEnded, and a later destroy sends no RST', async () => {
    const t = server();
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    t.cap.feed(frame(FrameType.Data, 0, 1, INITIAL, Buffer.alloc(INITIAL, 3)));
    const st = t.streams[0]!;
    st.end();
    await waitFor(() => st.state === 'local_closed', 2000, 'local_closed');
    expect(st.remoteEnded).toBe(false);
    expect(t.retired()).toBe(0);
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.FIN, 1, 0));
    expect(st.state).toBe('closed');
    // Nothing more can arrive: reading the whole window back grants nothing.
    const ended = new Promise((r) => st.once('end', r));
    st.resume();
    await ended;
    await turn(); // frames go out batched, on the next turn
    expect(t.out(1).filter((f) => f.type === FrameType.WindowUpdate && f.length > 0)).toEqual([]);
    expect(t.s.bufferedBytes).toBe(0);
    expect(st.remoteEnded).toBe(true);
    expect(t.retired()).toBe(1);
    expect(t.s.streamCount).toBe(0);
    st.destroy();
    await turn();
    const fins = t.out(1).filter((f) => f.flags & Flag.FIN);
    expect(fins).toHaveLength(1);
    expect(t.out(1).filter((f) => f.flags & Flag.RST)).toEqual([]);
    t.s.destroy();
  });

  it('the peer FINs first, then we end: one FIN, closed, freed, and a later destroy sends no RST', async () => {
    const t = server();
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.SYN | Flag.FIN, 1, 0));
    const st = t.streams[0]!;
    expect(st.state).toBe('remote_closed');
    expect(st.remoteEnded).toBe(true);
    expect(t.retired()).toBe(0);
    const finished = new Promise((r) => st.once('finish', r));
    st.end('bye');
    await finished;
    expect(st.state).toBe('closed');
    expect(t.retired()).toBe(1);
    expect(t.s.streamCount).toBe(0);
    st.destroy();
    await turn();
    const frames = t.out(1);
    expect(frames.filter((f) => f.flags & Flag.FIN)).toHaveLength(1);
    expect(frames.filter((f) => f.flags & Flag.RST)).toEqual([]);
    t.s.destroy();
  });
});

describe('stream reset by the peer', () => {
  it('is not answered with an RST of our own', async () => {
    const t = server();
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    const st = t.streams[0]!;
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.RST, 1, 0));
    expect(st.state).toBe('reset');
    expect(st.destroyed).toBe(true);
    await turn();
    expect(t.out(1).filter((f) => f.flags & Flag.RST)).toEqual([]);
    expect(t.retired()).toBe(1);
    t.s.destroy();
  });
});

describe('stream state on late ACK and FIN', () => {
  it('we open and end before the ACK: the ACK does not reopen it, so the peer FIN closes and frees it', async () => {
    const cap = new CaptureTransport();
    const s = new Session(cap, { client: true, keepaliveIntervalMs: 0 });
    const st = s.openStream();
    st.on('error', () => {});
    st.resume();
    st.end();
    await waitFor(() => st.state === 'local_closed', 2000, 'local_closed');
    cap.feed(frame(FrameType.WindowUpdate, Flag.ACK, st.id, 0));
    expect(st.state).toBe('local_closed');
    cap.feed(frame(FrameType.WindowUpdate, Flag.FIN, st.id, 0));
    expect(st.state).toBe('closed');
    expect(s.streamCount).toBe(0);
    s.destroy();
  });

  it('a stream the peer opened and FINned while waiting in the backlog is handed over still remote_closed', async () => {
    const cap = new CaptureTransport();
    const s = new Session(cap, { client: false, keepaliveIntervalMs: 0, ackDelayMs: 0 });
    cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    cap.feed(frame(FrameType.WindowUpdate, Flag.FIN, 1, 0));
    const streams: YamuxStream[] = [];
    s.on('stream', (x: YamuxStream) => streams.push(x));
    await turn(); // the backlog is handed over on a microtask
    const st = streams[0]!;
    expect(st.state).toBe('remote_closed');
    expect(st.remoteEnded).toBe(true);
    const finished = new Promise((r) => st.once('finish', r));
    st.end();
    await finished;
    expect(st.state).toBe('closed');
    expect(s.streamCount).toBe(0);
    s.destroy();
  });
});

describe('stream send window', () => {
  it('a write larger than the window: frames of at most 256 KiB, a stop at the window, the rest after the peer grants more', async () => {
    const t = server();
    t.cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    const st = t.streams[0]!;
    let done = false;
    st.write(Buffer.alloc(INITIAL + 100_000, 1), () => (done = true));
    await turn();
    const data = () => t.out(1).filter((f) => f.type === FrameType.Data).map((f) => f.length);
    expect(data()).toEqual([INITIAL]);
    expect(done).toBe(false);
    t.cap.feed(frame(FrameType.WindowUpdate, 0, 1, 40_000));
    await turn();
    expect(data()).toEqual([INITIAL, 40_000]);
    expect(done).toBe(false);
    t.cap.feed(frame(FrameType.WindowUpdate, 0, 1, 1024 * 1024));
    await waitFor(() => done, 2000, 'write callback');
    expect(data()).toEqual([INITIAL, 40_000, 60_000]);
    // 1 MiB - 60,000 of credit left: a 600,000-byte write goes out in 256 KiB frames at most.
    const written = new Promise((r) => st.write(Buffer.alloc(600_000, 2), r));
    await written;
    expect(data().slice(3)).toEqual([INITIAL, INITIAL, 600_000 - 2 * INITIAL]);
    t.s.destroy();
  });
});
