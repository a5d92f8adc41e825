// The session's outbound side against a transport that says "full": a
// stream's write completes only once the transport drains (so a writer
// cannot queue without bound), waiters resume in order and stop again when
// one of them refills the transport; small frames are batched but never
// into a message much over 64 KiB; GoAway goes out once; the owner hears
// 'streamclosed' once per stream that leaves.
import { describe, it, expect } from 'vitest';
import { Flag, FrameType, GoAwayCode, Session, type Transport, type TransportHandlers, type YamuxStream } from '../src/index.js';
import { frame, parseFrames, turn } from './helpers.js';

/** A transport whose send() answers `accepting`; the test fires drain. */
class GatedTransport implements Transport {
  h: TransportHandlers | null = null;
  accepting = true;
  written: Buffer[] = [];
  attach(h: TransportHandlers): void {
    this.h = h;
  }
  send(chunk: Buffer): boolean {
    this.written.push(Buffer.from(chunk));
    return this.accepting;
  }
  end(): void {}
  destroy(): void {}
  drain(): void {
    this.h!.drain();
  }
  feed(b: Buffer): void {
    this.h!.data(b);
  }
}

function client(t: Transport) {
  return new Session(t, { client: true, keepaliveIntervalMs: 0, ackDelayMs: 0 });
}

describe('outbound backpressure', () => {
  it("a stream's write completes only after the full transport drains", async () => {
    const t = new GatedTransport();
    const s = client(t);
    const st = s.openStream();
    st.on('error', () => {});
    await turn();
    t.accepting = false;
    let done = false;
    st.write(Buffer.alloc(32 * 1024, 1), () => (done = true)); // ≥ coalesceBelow: sent at once
    await turn();
    await turn();
    expect(done).toBe(false);
    t.accepting = true;
    t.drain();
    await turn();
    expect(done).toBe(true);
    s.destroy();
  });

  it('waiters resume in order on drain; one that refills the transport holds the rest until the next drain', () => {
    const t = new GatedTransport();
    const s = client(t);
    t.accepting = false;
    s.sendData(1, Buffer.alloc(32 * 1024)); // the transport is now full
    const ran: string[] = [];
    s.whenWritable(() => {
      ran.push('a');
      s.sendData(1, Buffer.alloc(32 * 1024)); // refills it: still full
    });
    s.whenWritable(() => ran.push('b'));
    expect(ran).toEqual([]);
    t.drain();
    expect(ran).toEqual(['a']);
    t.accepting = true;
    t.drain();
    expect(ran).toEqual(['a', 'b']);
    // Not full any more: at once.
    s.whenWritable(() => ran.push('c'));
    expect(ran).toEqual(['a', 'b', 'c']);
    s.destroy();
  });

  it('a waiter is released when the session closes instead of draining', () => {
    const t = new GatedTransport();
    const s = client(t);
    t.accepting = false;
    s.sendData(1, Buffer.alloc(32 * 1024));
    let ran = false;
    s.whenWritable(() => (ran = true));
    s.destroy();
    expect(ran).toBe(true);
  });
});

describe('batching', () => {
  it('small frames are batched, but a batch reaching 64 KiB is sent at once', async () => {
    const t = new GatedTransport();
    const s = client(t);
    for (let i = 0; i < 10; i++) s.sendData(1, Buffer.alloc(10 * 1024)); // each below coalesceBelow
    // Synchronously, before the scheduled flush: what passed 64 KiB already went.
    expect(t.written.length).toBeGreaterThanOrEqual(1);
    expect(t.written[0]!.length).toBeGreaterThanOrEqual(64 * 1024);
    await turn();
    for (const m of t.written) expect(m.length).toBeLessThan(64 * 1024 + 10 * 1024 + 24);
    const { frames, complete } = parseFrames(Buffer.concat(t.written));
    expect(complete).toBe(true);
    expect(frames.filter((f) => f.type === FrameType.Data)).toHaveLength(10);
    s.destroy();
  });
});

describe('GoAway and stream bookkeeping', () => {
  it('goAway() twice sends one GoAway', async () => {
    const t = new GatedTransport();
    const s = client(t);
    s.goAway();
    s.goAway(GoAwayCode.InternalError);
    await turn();
    expect(parseFrames(Buffer.concat(t.written)).frames).toEqual([expect.objectContaining({ type: FrameType.GoAway, length: GoAwayCode.Normal })]);
    expect(s.localGoAway).toBe(true);
    s.destroy();
  });

  it("'streamclosed' is emitted once for each stream that leaves the session", async () => {
    const t = new GatedTransport();
    const s = client(t);
    let closedEvents = 0;
    s.on('streamclosed', () => closedEvents++);
    const a = s.openStream();
    const b = s.openStream();
    a.on('error', () => {});
    b.on('error', () => {});
    t.feed(frame(FrameType.WindowUpdate, Flag.ACK | Flag.RST, a.id, 0)); // the peer resets a
    expect(closedEvents).toBe(1);
    b.destroy(); // we reset b
    await turn();
    expect(closedEvents).toBe(2);
    t.feed(frame(FrameType.WindowUpdate, Flag.RST, a.id, 0)); // late frame for a gone stream
    expect(closedEvents).toBe(2);
    expect(s.streamCount).toBe(0);
    s.destroy();
  });
});
