// A peer that abuses the session: floods pings and never reads the answers,
// floods stream opens we refuse. The session keeps what it queues bounded,
// answers at a bounded rate, and ends the session when the abuse goes on.
import { describe, it, expect } from 'vitest';
import type { Duplex } from 'node:stream';
import { Flag, FrameType, GoAwayCode, Session, SessionError, duplexTransport, memoryDuplexPair, type SessionLimit, type SessionOptions } from '../src/index.js';
import { FrameTap, deadline, frame, nextEvent, waitFor } from './helpers.js';

const PING = frame(FrameType.Ping, Flag.SYN, 0, 7);

/** Our session on one end of an in-memory pair; the test drives the other end by hand. */
function sessionAgainstRawPeer(opts: Partial<SessionOptions>) {
  const [ours, peer] = memoryDuplexPair(64 * 1024);
  const limits: SessionLimit[] = [];
  const session = new Session(duplexTransport(ours), { client: false, keepaliveIntervalMs: 0, onLimit: (l) => limits.push(l), ...opts });
  session.on('close', () => {});
  return { session, ours, peer, limits };
}

/** Write `count` pings in batches of `perWrite`, stopping when the pair pushes back. Returns how many were written. */
async function floodPings(peer: Duplex, count: number, perWrite = 1000): Promise<{ written: number; pushedBack: boolean }> {
  const batch = Buffer.concat(Array.from({ length: perWrite }, () => PING));
  let written = 0;
  while (written < count) {
    written += perWrite;
    if (!peer.write(batch)) return { written, pushedBack: true };
    await new Promise((r) => setImmediate(r));
  }
  return { written, pushedBack: false };
}

function readAll(peer: Duplex): FrameTap {
  const tap = new FrameTap();
  peer.on('data', (c: Buffer) => tap.push(c));
  return tap;
}

describe('session ceilings', () => {
  it('a peer that floods pings and never reads: the outbound queue stays under its cap and reading pauses', async () => {
    const cap = 256 * 1024;
    const { session, ours, peer, limits } = sessionAgainstRawPeer({ maxOutboundQueued: cap, outboundStallMs: 0, pingAnswersPerSecond: 0 });
    let maxQueued = 0;
    const sample = setInterval(() => (maxQueued = Math.max(maxQueued, ours.writableLength)), 1);
    // 200k pings would queue 2.4 MB of answers if nothing pushed back.
    const flood = await deadline(floodPings(peer, 200_000), 10_000, 'ping flood');
    clearInterval(sample);
    maxQueued = Math.max(maxQueued, ours.writableLength);
    expect(flood.pushedBack).toBe(true);
    expect(limits).toContain('outbound_queue');
    // The cap, plus one 64 KiB batch and the answers to one 12 KB read.
    expect(maxQueued).toBeLessThanOrEqual(cap + 64 * 1024 + 12 * 1024);
    expect(session.closed).toBe(false);
    // Once the peer reads, the session drains, resumes reading, and answers every ping.
    const tap = readAll(peer);
    await waitFor(() => tap.frames.filter((f) => f.type === FrameType.Ping && f.flags === Flag.ACK).length === flood.written, 10_000, 'every ping answered');
    session.destroy();
  });

  it('a peer that stays over the queue cap is closed after the stall timeout', async () => {
    const { session, peer, limits } = sessionAgainstRawPeer({ maxOutboundQueued: 64 * 1024, outboundStallMs: 200, pingAnswersPerSecond: 0 });
    const closed = nextEvent(session, 'close', 5_000);
    await floodPings(peer, 100_000);
    const [err] = (await closed) as [SessionError];
    expect(err.code).toBe('OUTBOUND_STALLED');
    expect(limits.filter((l) => l === 'outbound_stall')).toHaveLength(1);
  });

  it('ping answers are rate-limited: a burst gets the bucket, the rest go unanswered', async () => {
    const { session, peer, limits } = sessionAgainstRawPeer({ pingAnswersPerSecond: 5 });
    const tap = readAll(peer);
    // One write: the 100 pings are parsed in one turn, so the bucket refills by ~nothing meanwhile.
    peer.write(Buffer.concat(Array.from({ length: 100 }, () => PING)));
    const acks = () => tap.frames.filter((f) => f.type === FrameType.Ping && f.flags === Flag.ACK).length;
    await waitFor(() => limits.length === 95, 5_000, '95 pings refused');
    await waitFor(() => acks() === 5, 5_000, '5 answers');
    expect(limits.every((l) => l === 'ping_rate')).toBe(true);
    // The bucket refills: a later ping is answered again.
    await waitFor(() => {
      peer.write(PING);
      return acks() > 5;
    }, 5_000, 'an answer after the refill', );
    expect(session.closed).toBe(false);
    session.destroy();
  });

  it('a SYN flood past the backlog is refused at a bounded rate, then closed with a protocol-error GoAway', async () => {
    const { session, peer, limits } = sessionAgainstRawPeer({ acceptBacklog: 4, refusalsPerSecond: 10 });
    const tap = readAll(peer);
    const closed = nextEvent(session, 'close', 5_000);
    const syns: Buffer[] = [];
    for (let i = 0; i < 10_000; i++) syns.push(frame(FrameType.WindowUpdate, Flag.SYN, 2 * i + 1, 0));
    peer.write(Buffer.concat(syns));
    const [err] = (await closed) as [SessionError];
    expect(err.code).toBe('PROTOCOL_ERROR');
    expect(err.message).toBe('peer opened streams we refused faster than 10/s');
    expect(session.streamCount).toBe(0);
    await waitFor(() => tap.frames.some((f) => f.type === FrameType.GoAway), 5_000, 'GoAway');
    const goAway = tap.frames.find((f) => f.type === FrameType.GoAway)!;
    expect(goAway.length).toBe(GoAwayCode.ProtocolError);
    // 4 waited in the backlog, 10 were refused (the bucket), the 15th ended the session.
    expect(tap.frames.filter((f) => f.type === FrameType.WindowUpdate && f.flags & Flag.RST)).toHaveLength(10);
    expect(limits).toEqual(['refusal_rate']);
  });
});
