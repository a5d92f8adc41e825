// Property tests: random payload sets over many concurrent streams, opened by
// both sides, with the byte stream between the sessions re-chunked at random
// points (down to 1-byte pieces, and merged across writes) and delivered
// asynchronously. Every stream must deliver exactly its bytes, in order, in
// both directions, and end; both sessions' stream maps must be empty after.
//
// Reproduce a failure with FC_SEED=<seed> (fast-check prints it).
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { Session, type YamuxStream } from '../src/index.js';
import { PatternChecker, chunkedTransportPair, deadline, patternBytes, waitFor } from './helpers.js';

const seedParam = process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {};

interface Spec {
  fromClient: boolean;
  req: Uint8Array[];
  res: Uint8Array[];
}

function sessions(cutAB: number[], cutBA: number[], window: number, piecesPerTurn: number, hwm: number) {
  const [ta, tb] = chunkedTransportPair(cutAB, cutBA, { highWaterMark: hwm, piecesPerTurn });
  const opts = { keepaliveIntervalMs: 0, maxStreamWindow: window };
  const client = new Session(ta, { client: true, ...opts });
  const server = new Session(tb, { client: false, ...opts });
  return { client, server, ta, tb };
}

/** Keep a promise for Promise.all later without an unhandled-rejection report in between. */
function track<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

const concat = (parts: Uint8Array[]) => Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.length)));

/**
 * Opener writes a 4-byte index then its request chunks and ends; the acceptor
 * starts answering as soon as it knows the index (both directions flow at
 * once) and checks the request at its end; the opener checks the answer.
 */
async function runSmall(specs: Spec[], cutAB: number[], cutBA: number[], piecesPerTurn: number, hwm: number): Promise<void> {
  const { client, server } = sessions(cutAB, cutBA, 256 * 1024, piecesPerTurn, hwm);
  const problems: string[] = [];
  const done: Promise<void>[] = [];

  const accept = (s: YamuxStream) => {
    done.push(
      track(new Promise<void>((resolve, reject) => {
        const parts: Buffer[] = [];
        let have = 0;
        let idx = -1;
        s.on('error', reject);
        s.on('data', (c: Buffer) => {
          parts.push(c);
          have += c.length;
          if (idx < 0 && have >= 4) {
            idx = Buffer.concat(parts).readUInt32BE(0);
            const spec = specs[idx];
            if (!spec) return reject(new Error(`bad index ${idx} on stream ${s.id}`));
            for (const r of spec.res) s.write(r);
            s.end();
          }
        });
        s.on('end', () => {
          const all = Buffer.concat(parts);
          if (idx < 0) return reject(new Error(`stream ${s.id} ended before its index`));
          const want = concat(specs[idx]!.req);
          if (!all.subarray(4).equals(want)) problems.push(`request ${idx} (stream ${s.id}): got ${all.length - 4} bytes, want ${want.length}`);
          s.once('finish', resolve);
          if (s.writableFinished) resolve();
        });
      })),
    );
  };
  client.on('stream', accept);
  server.on('stream', accept);

  specs.forEach((spec, i) => {
    const s = (spec.fromClient ? client : server).openStream();
    done.push(
      track(new Promise<void>((resolve, reject) => {
        const parts: Buffer[] = [];
        s.on('error', reject);
        s.on('data', (c: Buffer) => parts.push(c));
        s.on('end', () => {
          const want = concat(spec.res);
          const got = Buffer.concat(parts);
          if (!got.equals(want)) problems.push(`response ${i} (stream ${s.id}): got ${got.length} bytes, want ${want.length}`);
          if (s.writableFinished) resolve();
          else s.once('finish', resolve);
        });
        const head = Buffer.alloc(4);
        head.writeUInt32BE(i);
        s.write(head);
        for (const c of spec.req) s.write(c);
        s.end();
      })),
    );
  });

  // Streams accepted later push onto `done`; wait until every stream has been seen.
  await deadline(
    (async () => {
      await waitFor(() => done.length >= specs.length * 2, 10_000, 'all streams accepted');
      await Promise.all(done);
    })(),
    8_000,
    'all streams complete',
  );
  expect(problems).toEqual([]);
  await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2000, 'stream maps empty');
  expect(client.closed || server.closed).toBe(false);
  const closed = new Promise((r) => server.once('close', r));
  client.close();
  await deadline(closed, 5000, 'server close');
}

// Cut patterns: mostly tiny pieces (1 byte, a few bytes: headers split
// anywhere), sometimes larger ones that merge several frames.
const cutArb = fc.oneof(
  fc.constant<number[]>([1]),
  fc.array(
    fc.oneof(
      { weight: 4, arbitrary: fc.constant(1) },
      { weight: 4, arbitrary: fc.integer({ min: 1, max: 13 }) },
      { weight: 2, arbitrary: fc.integer({ min: 1, max: 200 }) },
      { weight: 1, arbitrary: fc.integer({ min: 200, max: 5000 }) },
    ),
    { minLength: 1, maxLength: 30, size: 'medium' },
  ),
);

const chunkArb = fc.uint8Array({ minLength: 0, maxLength: 1200, size: 'large' });
const specArb: fc.Arbitrary<Spec> = fc.record({
  fromClient: fc.boolean(),
  req: fc.array(chunkArb, { maxLength: 5 }),
  res: fc.array(chunkArb, { maxLength: 5 }),
});

describe('property: streams survive any chunking of the byte stream', () => {
  it('many concurrent small streams, both sides opening, cut down to 1-byte pieces', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(specArb, { minLength: 1, maxLength: 24, size: 'medium' }),
        cutArb,
        cutArb,
        fc.integer({ min: 1, max: 400 }),
        fc.constantFrom(64, 4096, 64 * 1024),
        async (specs, cutAB, cutBA, piecesPerTurn, hwm) => {
          await runSmall(specs, cutAB, cutBA, piecesPerTurn, hwm);
        },
      ),
      { numRuns: 150, timeout: 20_000, interruptAfterTimeLimit: 45_000, markInterruptAsFailure: true, ...seedParam },
    );
  }, 60_000);

  it('every stream in 1-byte pieces (worst case) with 40 streams', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(specArb, { minLength: 30, maxLength: 40 }), async (specs) => {
        await runSmall(specs, [1], [1], 512, 4096);
      }),
      { numRuns: 10, timeout: 20_000, interruptAfterTimeLimit: 45_000, markInterruptAsFailure: true, ...seedParam },
    );
  }, 60_000);

  it('large payloads past several windows, partial reads at random times, random cuts', async () => {
    const bigCut = fc.array(
      fc.oneof(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 1000, max: 70_000 }), fc.integer({ min: 70_000, max: 300_000 })),
      { minLength: 1, maxLength: 20 },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({ fromClient: fc.boolean(), up: fc.integer({ min: 0, max: 900_000 }), down: fc.integer({ min: 0, max: 900_000 }) }),
          { minLength: 1, maxLength: 4 },
        ),
        bigCut,
        bigCut,
        fc.constantFrom(256 * 1024, 512 * 1024, 1024 * 1024),
        fc.array(fc.integer({ min: 1, max: 200_000 }), { minLength: 1, maxLength: 10 }),
        async (specs, cutAB, cutBA, window, readSizes) => {
          const { client, server } = sessions(cutAB, cutBA, window, 64, 256 * 1024);
          let ri = 0;
          // Paused-mode consumer: read() a pattern-chosen amount per turn.
          const consume = (s: YamuxStream, seed: number, want: number) =>
            new Promise<void>((resolve, reject) => {
              const chk = new PatternChecker(seed);
              let ended = false;
              s.on('error', reject);
              s.on('end', () => {
                ended = true;
              });
              const finish = () => {
                if (chk.bad >= 0 || chk.received !== want) reject(new Error(`stream ${s.id} seed ${seed}: got ${chk.received}/${want}, first bad byte ${chk.bad}`));
                else resolve();
              };
              const wait = () => {
                const go = () => {
                  s.off('readable', go);
                  s.off('end', go);
                  step();
                };
                s.on('readable', go);
                s.on('end', go);
              };
              const step = () => {
                if (ended) return finish();
                const n = readSizes[ri++ % readSizes.length]!;
                const avail = s.readableLength;
                const c = (avail > 0 ? s.read(Math.min(n, avail)) : s.read()) as Buffer | null;
                if (c) {
                  chk.push(c);
                  setImmediate(step);
                } else if (ended) finish();
                else wait();
              };
              wait();
            });
          const write = async (s: YamuxStream, seed: number, total: number) => {
            let off = 0;
            while (off < total) {
              const n = Math.min(100_000, total - off);
              if (!s.write(patternBytes(seed, off, n))) await new Promise((r) => s.once('drain', r));
              off += n;
            }
            s.end();
          };
          const done: Promise<void>[] = [];
          const accept = (s: YamuxStream) => {
            // Stream ids are unique across the session pair; index by opener order.
            const i = ids.indexOf(s.id);
            const spec = specs[i]!;
            done.push(track(consume(s, 1000 + i, spec.up)), track(write(s, 2000 + i, spec.down)));
          };
          const ids: number[] = [];
          client.on('stream', accept);
          server.on('stream', accept);
          specs.forEach((spec, i) => {
            const s = (spec.fromClient ? client : server).openStream();
            ids.push(s.id);
            done.push(track(consume(s, 2000 + i, spec.down)), track(write(s, 1000 + i, spec.up)));
          });
          await deadline(
            (async () => {
              await waitFor(() => done.length === specs.length * 4, 10_000, 'all accepted');
              await Promise.all(done);
            })(),
            20_000,
            'big streams complete',
          );
          await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2000, 'stream maps empty');
          expect(client.bufferedBytes).toBe(0);
          expect(server.bufferedBytes).toBe(0);
          const closed = new Promise((r) => server.once('close', r));
          client.close();
          await deadline(closed, 5000, 'server close');
        },
      ),
      { numRuns: 40, timeout: 30_000, interruptAfterTimeLimit: 100_000, markInterruptAsFailure: true, ...seedParam },
    );
  }, 120_000);
});
