// Fuzz: 100,000+ random and mutated byte sequences fed into a server session
// through a capturing transport, in random chunkings (down to 1 byte).
//
// Each case is one of:
//   valid      a well-formed client conversation (SYNs, data within the
//              window, window updates, FIN, RST, pings, GoAway normal, frames
//              for already-reset ids, unknown ping ACKs); must NOT end in a
//              protocol error.
//   must-fail  a valid prefix followed by a frame the parser is guaranteed to
//              reach and reject (bad version, bad type, Data/WindowUpdate on
//              stream 0, Ping/GoAway on a stream id, oversized Data, SYN with
//              the server's id parity); MUST end in PROTOCOL_ERROR.
//   overrun    a must-fail class of its own: a fresh stream whose peer sends
//              past the receive window we granted (a 256 KiB window, payload
//              in one or more frames, the last announcing the overrun); the
//              session must refuse it (PROTOCOL_ERROR), not buffer it.
//   mutated    a valid conversation with bit flips, truncation, garbage
//              inserted, frames dropped/swapped/duplicated, duplicate SYNs,
//              data past the window, FIN twice, data after FIN; anything goes
//              except a crash or an inconsistent session.
//   random     random bytes.
// For every case: feeding never throws; the session either stays open and
// consistent (bounded streams and buffer, no protocol-error GoAway sent), or
// is closed with PROTOCOL_ERROR having written a GoAway(code 1) as its last
// frame and ended (not destroyed) the transport, or closed with GOAWAY after
// the input carried a non-normal GoAway. What the session wrote is always a
// whole number of well-formed frames. Uncaught exceptions and unhandled
// rejections fail the run (vitest reports them).
//
// Seeded and reproducible: FUZZ_SEED=<n> changes the master seed, FUZZ_CASE=<i>
// runs one case (failures print both).
import { describe, it, expect } from 'vitest';
import { Flag, FrameType, GoAwayCode, Session, type SessionError, type YamuxStream } from '../src/index.js';
import { CaptureTransport, frame, parseFrames, randInt, rng, turn } from './helpers.js';

const MASTER_SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : 0x5eed_2024;
const ONLY_CASE = process.env.FUZZ_CASE ? Number(process.env.FUZZ_CASE) : undefined;
const CASES = 100_000;

const LIMITS = {
  maxStreams: 8,
  acceptBacklog: 4,
  maxSessionBuffered: 64 * 1024,
  maxFrameLength: 1024 * 1024,
};
const WINDOW = 256 * 1024; // what the peer may send before our ACK's bonus
const ZEROS = Buffer.alloc(60_000);

type Kind = 'valid' | 'must-fail' | 'overrun' | 'mutated' | 'random';
type R = () => number;

interface Conversation {
  frames: Buffer[];
  /** Ids the model peer opened and has not reset. */
  live: number[];
  /** Of those, the ones it sent FIN on. */
  finned: number[];
}

function pick<T>(r: R, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)]!;
}

/** Seeded random bytes, sliced per use (generating each payload byte by byte would dominate the run). */
const POOL = (() => {
  const r = rng(MASTER_SEED);
  const b = Buffer.allocUnsafe(1 << 20);
  for (let i = 0; i < b.length; i += 4) b.writeUInt32LE((r() * 0x100000000) >>> 0, i);
  return b;
})();

function bytes(r: R, n: number): Buffer {
  if (n > POOL.length) throw new Error('payload larger than the random pool');
  const off = randInt(r, 0, POOL.length - n);
  return POOL.subarray(off, off + n);
}

/** A well-formed conversation from a client peer (odd ids). */
function genValid(r: R, allowGoAwayError: boolean): Conversation {
  const frames: Buffer[] = [];
  const streams = new Map<number, { sent: number; fin: boolean }>();
  const dead: number[] = [];
  let nextId = 1 + 2 * randInt(r, 0, 3);
  const n = randInt(r, 1, 14);
  for (let k = 0; k < n; k++) {
    const open = [...streams.entries()].filter(([, s]) => !s.fin);
    const any = [...streams.keys()];
    const op = r();
    if (op < 0.22 || any.length === 0) {
      const id = nextId;
      nextId += 2;
      if (r() < 0.6) {
        frames.push(frame(FrameType.WindowUpdate, Flag.SYN, id, pick(r, [0, 0, 1000, 768 * 1024, 16 * 1024 * 1024])));
        streams.set(id, { sent: 0, fin: false });
      } else {
        const len = randInt(r, 0, 200);
        const fin = r() < 0.2;
        frames.push(frame(FrameType.Data, Flag.SYN | (fin ? Flag.FIN : 0), id, len, bytes(r, len)));
        streams.set(id, { sent: len, fin });
      }
    } else if (op < 0.55 && open.length > 0) {
      const [id, s] = pick(r, open);
      const big = r() < 0.1;
      const len = Math.min(big ? randInt(r, 1000, 12_000) : randInt(r, 0, 300), WINDOW - s.sent);
      const fin = r() < 0.15;
      frames.push(frame(FrameType.Data, fin ? Flag.FIN : pick(r, [0, 0, Flag.ACK]), id, len, bytes(r, len)));
      s.sent += len;
      s.fin = fin;
    } else if (op < 0.65 && any.length > 0) {
      frames.push(frame(FrameType.WindowUpdate, pick(r, [0, Flag.ACK]), pick(r, any), randInt(r, 0, 1 << 20)));
    } else if (op < 0.72 && open.length > 0) {
      const [id, s] = pick(r, open);
      frames.push(frame(FrameType.WindowUpdate, Flag.FIN, id, 0));
      s.fin = true;
    } else if (op < 0.78 && any.length > 0) {
      const id = pick(r, any);
      frames.push(frame(FrameType.WindowUpdate, Flag.RST, id, 0));
      streams.delete(id);
      dead.push(id);
    } else if (op < 0.86) {
      frames.push(frame(FrameType.Ping, pick(r, [Flag.SYN, Flag.SYN, Flag.ACK]), 0, randInt(r, 0, 0xffffffff)));
    } else if (op < 0.9 && dead.length > 0) {
      // Frames in flight for a stream already reset: dropped.
      const id = pick(r, dead);
      const len = randInt(r, 0, 50);
      frames.push(r() < 0.5 ? frame(FrameType.Data, 0, id, len, bytes(r, len)) : frame(FrameType.WindowUpdate, 0, id, 100));
    } else if (op < 0.92) {
      frames.push(frame(FrameType.GoAway, 0, 0, GoAwayCode.Normal));
    } else if (op < 0.93 && allowGoAwayError) {
      frames.push(frame(FrameType.GoAway, 0, 0, pick(r, [GoAwayCode.ProtocolError, GoAwayCode.InternalError, 7])));
      break;
    } else {
      frames.push(frame(FrameType.WindowUpdate, 0, nextId + 200, 5)); // unknown id: dropped
    }
  }
  const live = [...streams.keys()];
  return { frames, live, finned: live.filter((id) => streams.get(id)!.fin) };
}

/** A frame the session must reject wherever its parser meets it. */
function genFatal(r: R): Buffer {
  switch (randInt(r, 0, 8)) {
    case 0: {
      const f = frame(pick(r, [0, 1, 2, 3]), 0, 0, 0);
      f[0] = randInt(r, 1, 255); // version
      return f;
    }
    case 1: {
      const f = frame(0, 0, 1, 0);
      f[1] = randInt(r, 4, 255); // type
      return f;
    }
    case 2:
      return frame(FrameType.Data, pick(r, [0, Flag.SYN, Flag.FIN]), 0, randInt(r, 0, 10));
    case 3:
      return frame(FrameType.WindowUpdate, pick(r, [0, Flag.ACK, Flag.SYN]), 0, randInt(r, 0, 1000));
    case 4:
      return frame(FrameType.Ping, pick(r, [Flag.SYN, Flag.ACK]), randInt(r, 1, 0xffffffff), 1);
    case 5:
      return frame(FrameType.GoAway, 0, randInt(r, 1, 0xffffffff), 0);
    case 6:
      return frame(FrameType.Data, pick(r, [0, Flag.SYN]), 1 + 2 * randInt(r, 0, 1000), randInt(r, LIMITS.maxFrameLength + 1, 0xffffffff));
    case 7:
      return frame(pick(r, [FrameType.Data, FrameType.WindowUpdate]), Flag.SYN, 2 * randInt(r, 0, 1 << 30), 0); // server's parity (or 0)
    default:
      return frame(FrameType.Data, 0, 0, 0);
  }
}

/**
 * A peer that overruns the window on a stream it opens (after a valid prefix
 * that opened no stream, so maxStreams cannot turn the SYN away): `sent`
 * bytes in frames within the window, then a frame announcing past it (its
 * payload may never come: the header alone must be judged).
 */
function genOverrun(r: R): Buffer {
  const frames: Buffer[] = [];
  for (let i = randInt(r, 0, 3); i > 0; i--) frames.push(frame(FrameType.Ping, Flag.SYN, 0, randInt(r, 0, 0xffffffff)));
  const id = 1 + 2 * randInt(r, 0, 1000);
  frames.push(frame(FrameType.WindowUpdate, Flag.SYN, id, pick(r, [0, 1000])));
  let sent = 0;
  const pieces = randInt(r, 0, 4);
  for (let i = 0; i < pieces; i++) {
    // Within the session's buffer limit too (past it the stream is reset and what follows dropped).
    const len = randInt(r, 0, 60_000 - sent);
    frames.push(frame(FrameType.Data, 0, id, len, ZEROS.subarray(0, len)));
    sent += len;
  }
  const over = randInt(r, WINDOW - sent + 1, Math.min(LIMITS.maxFrameLength, WINDOW - sent + pick(r, [1, 100, 100_000])));
  const withPayload = over <= ZEROS.length && r() < 0.5;
  frames.push(frame(FrameType.Data, 0, id, over, withPayload ? ZEROS.subarray(0, over) : undefined));
  return Buffer.concat(frames);
}

/** Break a valid conversation in one or more of many ways. */
function mutate(r: R, c: Conversation): Buffer {
  const frames = [...c.frames];
  const ops = randInt(r, 1, 3);
  for (let k = 0; k < ops; k++) {
    const live = c.live.length ? pick(r, c.live) : 1;
    switch (randInt(r, 0, 11)) {
      case 0: // duplicate SYN for a live stream
        frames.push(frame(FrameType.WindowUpdate, Flag.SYN, live, 0));
        break;
      case 1: // data past the window (header only: the session must judge it there)
        frames.push(frame(FrameType.Data, 0, live, randInt(r, WINDOW + 1, LIMITS.maxFrameLength)));
        break;
      case 2: // many frames that together pass the window (costly: only sometimes)
        if (r() < 0.1) for (let i = 0; i < 5; i++) frames.push(frame(FrameType.Data, 0, live, 60_000, ZEROS));
        else frames.push(frame(FrameType.Data, 0, live, 100, ZEROS.subarray(0, 100)));
        break;
      case 3: // FIN twice
        frames.push(frame(FrameType.WindowUpdate, Flag.FIN, live, 0), frame(FrameType.Data, Flag.FIN, live, 0));
        break;
      case 4: // data after FIN
        frames.push(frame(FrameType.WindowUpdate, Flag.FIN, live, 0), frame(FrameType.Data, 0, live, 3, Buffer.from('abc')));
        break;
      case 5: // drop a frame
        if (frames.length) frames.splice(randInt(r, 0, frames.length - 1), 1);
        break;
      case 6: // swap two frames
        if (frames.length > 1) {
          const i = randInt(r, 0, frames.length - 1);
          const j = randInt(r, 0, frames.length - 1);
          [frames[i], frames[j]] = [frames[j]!, frames[i]!];
        }
        break;
      case 7: // duplicate a frame
        if (frames.length) frames.splice(randInt(r, 0, frames.length), 0, frames[randInt(r, 0, frames.length - 1)]!);
        break;
      case 8: // garbage between frames
        frames.splice(randInt(r, 0, frames.length), 0, bytes(r, randInt(r, 1, 30)));
        break;
      case 9: // a random header with a plausible type
        frames.push(frame(randInt(r, 0, 3), randInt(r, 0, 15), randInt(r, 0, 12), randInt(r, 0, 1 << 20)));
        break;
      default:
        frames.push(genFatal(r));
    }
  }
  const buf = Buffer.concat(frames);
  // Then bit flips and/or truncation on the bytes.
  if (buf.length > 0 && r() < 0.6) {
    const flips = randInt(r, 1, 4);
    for (let i = 0; i < flips; i++) buf[randInt(r, 0, buf.length - 1)]! ^= 1 << randInt(r, 0, 7);
  }
  if (r() < 0.3) return buf.subarray(0, randInt(r, 0, buf.length));
  return buf;
}

function makeCase(i: number): { kind: Kind; input: Buffer; r: R } {
  const r = rng((MASTER_SEED ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0);
  const k = r();
  if (k < 0.2) return { kind: 'valid', input: Buffer.concat(genValid(r, true).frames), r };
  if (k < 0.5) {
    const c = genValid(r, false);
    return { kind: 'must-fail', input: Buffer.concat([...c.frames, genFatal(r), ...genValid(r, true).frames]), r };
  }
  if (k < 0.55) return { kind: 'overrun', input: genOverrun(r), r };
  if (k < 0.9) return { kind: 'mutated', input: mutate(r, genValid(r, true)), r };
  return { kind: 'random', input: bytes(r, randInt(r, 1, 120)), r };
}

interface Result {
  closedWith?: string;
  goAways: number[];
}

async function runCase(i: number, stats: Record<string, number>): Promise<string | null> {
  const { kind, input, r } = makeCase(i);
  const cap = new CaptureTransport();
  const maxStreamWindow = pick(r, [256 * 1024, 1024 * 1024]);
  const session = new Session(cap, {
    client: false,
    keepaliveIntervalMs: 0,
    // An overrun case needs the window it overruns: no bonus beyond the initial one.
    maxStreamWindow: kind === 'overrun' ? WINDOW : maxStreamWindow,
    ...LIMITS,
  });
  const res: Result = { goAways: [] };
  let closeEvents = 0;
  session.on('close', (err?: SessionError) => {
    closeEvents++;
    res.closedWith = err ? err.code : 'clean';
  });
  session.on('goaway', (code: number) => res.goAways.push(code));
  const streams: YamuxStream[] = [];
  const onStream = (s: YamuxStream) => {
    streams.push(s);
    s.on('error', () => {});
    // An overrun stream must stay open to be overrun (a reset one drops what follows).
    const how = randInt(r, 0, 5);
    switch (kind === 'overrun' && (how === 3 || how === 5) ? 0 : how) {
      case 0:
        s.resume();
        break;
      case 1:
        break; // never read: fills its window and the session buffer
      case 2:
        s.end();
        break;
      case 3:
        s.destroy(); // RST from inside the 'stream' event
        break;
      case 4:
        s.resume();
        s.end(Buffer.alloc(randInt(r, 0, 20_000)));
        break;
      default:
        setImmediate(() => s.destroy());
    }
  };
  const listen = r();
  if (listen < 0.85) session.on('stream', onStream); // else: everything queues in the backlog (maybe a late listener)

  // Feed in random pieces: whole, 1-byte, or random sizes.
  const mode = r();
  let off = 0;
  try {
    while (off < input.length) {
      // Large inputs get larger random pieces (still splitting headers anywhere).
      const n = mode < 0.3 ? input.length : mode < 0.45 && input.length <= 4096 ? 1 : randInt(r, 1, input.length <= 8192 ? 64 : 16_384);
      cap.feed(input.subarray(off, off + n));
      off += n;
      if (listen >= 0.85 && listen < 0.92 && off >= input.length / 2 && session.listenerCount('stream') === 0) session.on('stream', onStream);
    }
  } catch (e) {
    return `threw while feeding: ${(e as Error).stack}`;
  }
  await turn();

  stats[kind] = (stats[kind] ?? 0) + 1;
  const out = cap.output();
  const parsed = parseFrames(out);
  if (!parsed.complete) return 'session wrote a partial frame';
  for (const f of parsed.frames) {
    if (f.version !== 0 || f.type > 3) return `session wrote a bad frame ${JSON.stringify(f)}`;
  }
  const protoGoAways = parsed.frames.filter((f) => f.type === FrameType.GoAway && f.length === GoAwayCode.ProtocolError);
  if (closeEvents > 1) return `'close' emitted ${closeEvents} times`;
  if (session.closed) {
    if (cap.destroyed) return `closed with ${res.closedWith} by destroying the transport`;
    if (!cap.ended) return 'closed without ending the transport';
    if (session.streamCount !== 0) return `closed with ${session.streamCount} streams in the map`;
    if (res.closedWith === 'PROTOCOL_ERROR') {
      stats[`${kind}:protocol-error`] = (stats[`${kind}:protocol-error`] ?? 0) + 1;
      const last = parsed.frames[parsed.frames.length - 1];
      if (!last || last.type !== FrameType.GoAway || last.length !== GoAwayCode.ProtocolError || last.streamId !== 0) {
        return 'protocol error without a trailing GoAway(1)';
      }
      if (protoGoAways.length !== 1) return `${protoGoAways.length} protocol-error GoAways`;
      if (kind === 'valid') return 'valid conversation ended in a protocol error';
    } else if (res.closedWith === 'GOAWAY') {
      stats[`${kind}:peer-goaway`] = (stats[`${kind}:peer-goaway`] ?? 0) + 1;
      if (!res.goAways.some((c) => c !== GoAwayCode.Normal)) return 'closed with GOAWAY without a non-normal GoAway';
      if (protoGoAways.length !== 0) return 'sent a protocol-error GoAway on a peer GoAway';
      if (kind === 'must-fail' || kind === 'overrun') return `${kind} case closed by a peer GoAway`;
    } else {
      return `closed with unexpected ${res.closedWith}`;
    }
    for (const s of streams) if (!s.destroyed && s.state !== 'closed') return `stream ${s.id} left ${s.state} after close`;
  } else {
    stats[`${kind}:open`] = (stats[`${kind}:open`] ?? 0) + 1;
    if (kind === 'must-fail' || kind === 'overrun') return `${kind} case left the session open`;
    if (protoGoAways.length !== 0) return 'open session sent a protocol-error GoAway';
    if (session.streamCount > LIMITS.maxStreams) return `${session.streamCount} streams > maxStreams`;
    if (session.bufferedBytes < 0 || session.bufferedBytes > LIMITS.maxSessionBuffered) return `bufferedBytes ${session.bufferedBytes}`;
    session.destroy();
    if (!session.closed || res.closedWith !== 'clean') return `destroy() left ${res.closedWith}`;
    if (session.streamCount !== 0) return 'destroy() left streams in the map';
    await turn();
  }
  return null;
}

describe('fuzz: session input', () => {
  it(`${CASES.toLocaleString('en')} random and mutated sequences: no crash, no hang, protocol errors answered with GoAway(1)`, async () => {
    const stats: Record<string, number> = {};
    const failures: string[] = [];
    const t0 = Date.now();
    const first = ONLY_CASE ?? 0;
    const last = ONLY_CASE ?? CASES - 1;
    for (let i = first; i <= last; i++) {
      const f = await runCase(i, stats);
      if (f) {
        failures.push(`case ${i} (FUZZ_SEED=${MASTER_SEED} FUZZ_CASE=${i}, ${makeCase(i).kind}): ${f}`);
        if (failures.length >= 10) break;
      }
    }
    const ms = Date.now() - t0;
    console.log(`fuzz: ${last - first + 1} cases in ${ms} ms`, JSON.stringify(stats));
    expect(failures).toEqual([]);
    if (ONLY_CASE === undefined) {
      // Every category was exercised and reached each outcome it can.
      expect(stats['valid']! + stats['must-fail']! + stats['overrun']! + stats['mutated']! + stats['random']!).toBe(CASES);
      expect(stats['must-fail:protocol-error']).toBe(stats['must-fail']);
      expect(stats['overrun']).toBeGreaterThan(1000);
      expect(stats['overrun:protocol-error']).toBe(stats['overrun']);
      expect(stats['valid:open']).toBeGreaterThan(stats['valid']! / 2);
      expect(stats['mutated:protocol-error']).toBeGreaterThan(1000);
      expect(stats['mutated:open']).toBeGreaterThan(1000);
      expect(stats['random:protocol-error']).toBeGreaterThan(100);
    }
  }, 120_000);
});
