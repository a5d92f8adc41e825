// The session's frame parser against a byte stream cut anywhere: a header
// split across chunks is gathered, a payload split across chunks reaches its
// stream whole and in order, a chunk that ends one payload and starts the next
// frame is divided at the right byte, and a FIN is applied only once its
// frame's payload is complete. The fuzzers cover this at random in
// `npm test`; these cases are fixed and fast, so the mutation run has them.
import { describe, it, expect } from 'vitest';
import { Flag, FrameType, Session, type YamuxStream } from '../src/index.js';
import { CaptureTransport, collect, deadline, frame, parseFrames, patternBytes } from './helpers.js';

const PING_OPAQUE = 7;

/** What a peer sends: two streams, payloads of 0–30 bytes around the 12-byte header size, a ping between them, and FINs. */
function peerBytes(): { bytes: Buffer; expected: Map<number, Buffer> } {
  const p = (seed: number, n: number) => patternBytes(seed, 0, n);
  const frames: Buffer[] = [
    frame(FrameType.WindowUpdate, Flag.SYN, 1, 0),
    frame(FrameType.Data, 0, 1, 0, Buffer.alloc(0)),
    frame(FrameType.Data, 0, 1, 1, p(1, 1)),
    frame(FrameType.Ping, Flag.SYN, 0, PING_OPAQUE),
    frame(FrameType.Data, 0, 1, 11, p(2, 11)),
    frame(FrameType.Data, 0, 1, 12, p(3, 12)),
    frame(FrameType.Data, Flag.SYN, 3, 13, p(4, 13)),
    frame(FrameType.Data, Flag.FIN, 1, 30, p(5, 30)),
    frame(FrameType.Data, Flag.FIN, 3, 5, p(6, 5)),
  ];
  const expected = new Map([
    [1, Buffer.concat([p(1, 1), p(2, 11), p(3, 12), p(5, 30)])],
    [3, Buffer.concat([p(4, 13), p(6, 5)])],
  ]);
  return { bytes: Buffer.concat(frames), expected };
}

/** Feed `chunks` to a server session in one go; resolve with what each stream received and the ping answers written. */
async function run(chunks: Buffer[]): Promise<{ received: Map<number, Buffer>; pingAnswers: number[]; closed: boolean }> {
  const cap = new CaptureTransport();
  const s = new Session(cap, { client: false, keepaliveIntervalMs: 0, ackDelayMs: 0 });
  let closed = false;
  s.on('close', () => (closed = true));
  const bodies: Array<Promise<[number, Buffer]>> = [];
  s.on('stream', (st: YamuxStream) => bodies.push(collect(st).then((b) => [st.id, b])));
  for (const c of chunks) cap.feed(c);
  const received = new Map(await deadline(Promise.all(bodies), 2000, `streams ended (cuts ${chunks.map((c) => c.length).join(',')})`));
  // The session's own answers (ACKs, the ping answer) go out on the next turn.
  await new Promise((r) => setImmediate(r));
  const pingAnswers = parseFrames(cap.output())
    .frames.filter((f) => f.type === FrameType.Ping && f.flags === Flag.ACK)
    .map((f) => f.length);
  const closedBefore = closed;
  s.destroy();
  return { received, pingAnswers, closed: closedBefore };
}

function cutAt(bytes: Buffer, cuts: number[]): Buffer[] {
  const out: Buffer[] = [];
  let from = 0;
  for (const c of cuts) {
    out.push(bytes.subarray(from, c));
    from = c;
  }
  out.push(bytes.subarray(from));
  return out;
}

async function expectIntact(chunks: Buffer[], expected: Map<number, Buffer>): Promise<void> {
  const r = await run(chunks);
  const label = `cuts ${chunks.map((c) => c.length).join(',')}`;
  expect(r.closed, label).toBe(false);
  expect([...r.received.keys()].sort(), label).toEqual([1, 3]);
  for (const [id, body] of expected) expect(r.received.get(id)!.equals(body), `${label}: stream ${id}`).toBe(true);
  expect(r.pingAnswers, label).toEqual([PING_OPAQUE]);
}

describe('the frame parser, with the byte stream cut anywhere', () => {
  const { bytes, expected } = peerBytes();

  it('in one chunk', async () => {
    await expectIntact([bytes], expected);
  });

  it('in two chunks, at every position', async () => {
    for (let i = 1; i < bytes.length; i++) await expectIntact(cutAt(bytes, [i]), expected);
  });

  it('one byte at a time', async () => {
    await expectIntact(cutAt(bytes, Array.from({ length: bytes.length - 1 }, (_, i) => i + 1)), expected);
  });

  it('in chunks of every fixed size from 2 to 40 bytes', async () => {
    for (let size = 2; size <= 40; size++) {
      const cuts: number[] = [];
      for (let c = size; c < bytes.length; c += size) cuts.push(c);
      await expectIntact(cutAt(bytes, cuts), expected);
    }
  });

  it('with a header split in three, its last part followed by a whole frame in the same chunk', async () => {
    // Header of the Data(11) frame at 12·4 + 1 = 49 .. 61: cut at 52 and 57.
    await expectIntact(cutAt(bytes, [52, 57]), expected);
  });
});
