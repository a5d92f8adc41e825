// The session's outbound side against a transport that says "full": a
// stream's write completes only once the transport drains (so a writer
// cannot queue without bound), waiters resume in order and stop again when
// one of them refills the transport; small frames are batched but never
// into a message much over 64 KiB; GoAway goes out once; the owner hears
// 'streamclosed' once per stream that leaves.
import { describe, it, expect } from 'vitest';
import { Flag, FrameType, GoAwayCode, Session, type SessionError, type Transport, type TransportHandlers, type YamuxStream } from '../src/index.js';
import { deadline, frame, parseFrames, turn } from './helpers.js';

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

describe('batch bounds', () => {
  it('a payload of exactly coalesceBelow bytes is sent at once as its own message, after the batched header', () => {
    const t = new GatedTransport();
    const s = new Session(t, { client: true, keepaliveIntervalMs: 0, ackDelayMs: 0, coalesceBelow: 1024 });
    const payload = Buffer.alloc(1024, 7);
    s.sendData(1, payload);
    expect(t.written.map((b) => b.length)).toEqual([12, 1024]);
    expect(t.written[1]!.equals(payload)).toBe(true);
    s.destroy();
  });

  it('a batch of exactly 64 KiB is sent at once, not on the next turn', () => {
    const t = new GatedTransport();
    const s = client(t);
    // 4 × (12-byte header + 16,372-byte payload) = 65,536, each payload below coalesceBelow (16 KiB).
    for (let i = 0; i < 4; i++) s.sendData(1, Buffer.alloc(16_372));
    expect(t.written.map((b) => b.length)).toEqual([64 * 1024]);
    s.destroy();
  });

  it('an empty batch is never sent as an empty message', async () => {
    const t = new GatedTransport();
    const s = client(t);
    s.sendData(1, Buffer.alloc(10)); // batched; a flush is scheduled
    s.sendData(1, Buffer.alloc(32 * 1024)); // big: the batch goes out now, so the scheduled flush finds it empty
    await turn();
    await turn();
    expect(t.written.length).toBeGreaterThan(0);
    expect(t.written.filter((b) => b.length === 0)).toEqual([]);
    s.close(); // a close flushes too: still nothing empty
    expect(t.written.filter((b) => b.length === 0)).toEqual([]);
  });
});

describe('writers on a closed session', () => {
  it('whenWritable() after the session closed calls back at once, even though the transport never drained', () => {
    const t = new GatedTransport();
    const s = client(t);
    t.accepting = false;
    s.sendData(1, Buffer.alloc(32 * 1024)); // the transport is now full
    s.destroy();
    let ran = false;
    s.whenWritable(() => (ran = true));
    expect(ran).toBe(true);
  });

  it('goAway() on a closed session neither sends nor marks a GoAway', async () => {
    const t = new GatedTransport();
    const s = client(t);
    s.destroy();
    s.goAway();
    await turn();
    expect(s.localGoAway).toBe(false);
    expect(t.written).toEqual([]);
  });
});

/** A transport that reports `queued` bytes unwritten and counts pause/resume calls. */
class MeteredTransport extends GatedTransport {
  queued = 0;
  pauses = 0;
  resumes = 0;
  ends = 0;
  destroys = 0;
  queuedBytes(): number {
    return this.queued;
  }
  pauseReading(): void {
    this.pauses++;
  }
  resumeReading(): void {
    this.resumes++;
  }
  override end(): void {
    this.ends++;
  }
  override destroy(): void {
    this.destroys++;
  }
}

function metered(opts: { maxOutboundQueued: number; outboundStallMs?: number }) {
  const t = new MeteredTransport();
  const limits: string[] = [];
  const s = new Session(t, { client: true, keepaliveIntervalMs: 0, ackDelayMs: 0, outboundStallMs: 0, onLimit: (l) => limits.push(l), ...opts });
  const closes: Array<SessionError | undefined> = [];
  s.on('close', (e?: SessionError) => closes.push(e));
  /** One big write: transmitted at once, so the queue check runs synchronously. */
  const send = () => s.sendData(1, Buffer.alloc(32 * 1024));
  return { t, s, limits, closes, send };
}

describe('the outbound queue cap', () => {
  it('0 turns the cap off: however much is queued, reading never pauses', () => {
    const m = metered({ maxOutboundQueued: 0 });
    m.t.queued = 1e9;
    m.send();
    expect([m.t.pauses, m.limits]).toEqual([0, []]);
    m.s.destroy();
  });

  it('at or under the cap reading goes on; one byte over it pauses', () => {
    const m = metered({ maxOutboundQueued: 100_000 });
    m.t.queued = 50_000;
    m.send();
    m.t.queued = 100_000;
    m.send();
    expect([m.t.pauses, m.limits]).toEqual([0, []]);
    m.t.queued = 100_001;
    m.send();
    expect([m.t.pauses, m.limits]).toEqual([1, ['outbound_queue']]);
    m.s.destroy();
  });

  it('while paused, more sends do not pause again; after a drain resumes reading, the next overrun pauses again', () => {
    const m = metered({ maxOutboundQueued: 100 });
    m.t.queued = 1000;
    m.send();
    m.send();
    expect([m.t.pauses, m.t.resumes]).toEqual([1, 0]);
    m.t.queued = 0;
    m.t.drain();
    expect([m.t.pauses, m.t.resumes]).toEqual([1, 1]);
    m.t.queued = 1000;
    m.send();
    expect([m.t.pauses, m.limits]).toEqual([2, ['outbound_queue', 'outbound_queue']]);
    m.s.destroy();
  });

  it('a drain while reading is not paused does not resume reading', () => {
    const m = metered({ maxOutboundQueued: 100 });
    m.t.drain();
    expect(m.t.resumes).toBe(0);
    m.s.destroy();
  });

  it('outboundStallMs 0: a paused session is never closed for stalling', async () => {
    const m = metered({ maxOutboundQueued: 100, outboundStallMs: 0 });
    m.t.queued = 1000;
    m.send();
    // A stall timer of 0 ms would fire before this 20 ms one.
    await new Promise((r) => setTimeout(r, 20));
    expect(m.closes).toEqual([]);
    expect(m.limits).toEqual(['outbound_queue']);
    m.s.destroy();
  });

  it('a stall ends the session hard, saying why, with our GoAway marked sent', async () => {
    const m = metered({ maxOutboundQueued: 100, outboundStallMs: 30 });
    m.t.queued = 1000;
    m.send();
    await deadline(new Promise<void>((r) => m.s.once('close', () => r())), 2000, 'stall close');
    expect(m.closes.map((e) => [e?.code, e?.message])).toEqual([['OUTBOUND_STALLED', 'peer read nothing for 30 ms with 100 bytes queued']]);
    expect(m.limits).toEqual(['outbound_queue', 'outbound_stall']);
    expect(m.s.localGoAway).toBe(true);
    expect([m.t.destroys, m.t.ends]).toEqual([1, 0]);
    const goAways = parseFrames(Buffer.concat(m.t.written)).frames.filter((f) => f.type === FrameType.GoAway);
    expect(goAways).toEqual([expect.objectContaining({ length: GoAwayCode.InternalError })]);
  });
});

describe('delayed ACKs and retired streams', () => {
  /** A server session with delayed ACKs, fed by the test; `acksFor(id)` counts ACK frames it wrote for `id`. */
  function server() {
    const t = new GatedTransport();
    const s = new Session(t, { client: false, keepaliveIntervalMs: 0, ackDelayMs: 10 });
    const acksFor = (id: number) =>
      parseFrames(Buffer.concat(t.written)).frames.filter((f) => f.type === FrameType.WindowUpdate && f.streamId === id && f.flags & Flag.ACK).length;
    return { t, s, acksFor };
  }

  it('a stream the peer resets before its delayed ACK went out is never ACKed', async () => {
    const { t, s, acksFor } = server();
    const seen: YamuxStream[] = [];
    s.on('stream', (st: YamuxStream) => {
      st.on('error', () => {});
      seen.push(st);
    });
    t.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    t.feed(frame(FrameType.WindowUpdate, Flag.RST, 1, 0));
    expect(seen).toHaveLength(1);
    // Let the 10 ms ACK timer pass, then its flush.
    await new Promise((r) => setTimeout(r, 30));
    await turn();
    expect(acksFor(1)).toBe(0);
    s.destroy();
  });

  it("a stream that closes cleanly is counted once in 'streamclosed', and a late destroy of it leaves a newer stream with its id alone", async () => {
    const { t, s, acksFor } = server();
    let closedEvents = 0;
    s.on('streamclosed', () => closedEvents++);
    const seen: YamuxStream[] = [];
    s.on('stream', (st: YamuxStream) => {
      st.on('error', () => {});
      st.resume();
      seen.push(st);
    });
    t.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    const old = seen[0]!;
    old.end(); // our FIN carries the ACK
    await turn();
    expect(acksFor(1)).toBe(1);
    // The peer's FIN closes stream 1 (both halves done); in the same chunk it opens a new stream 1.
    t.feed(Buffer.concat([frame(FrameType.WindowUpdate, Flag.FIN, 1, 0), frame(FrameType.WindowUpdate, Flag.SYN, 1, 0)]));
    expect(seen).toHaveLength(2);
    expect(s.streamCount).toBe(1);
    // The old stream is destroyed after that (auto-destroy, or its owner): the new one keeps its place and its ACK.
    old.destroy();
    await new Promise((r) => setTimeout(r, 30));
    await turn();
    expect(closedEvents).toBe(1);
    expect(s.streamCount).toBe(1);
    expect(acksFor(1)).toBe(2);
    s.destroy();
  });
});
