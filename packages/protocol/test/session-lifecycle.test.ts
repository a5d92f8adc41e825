// How a session ends: the transport closing (clean only after the peer's
// normal GoAway), a hard destroy that sends nothing more, pending pings
// rejected at once, one 'close' event however many ends arrive, one GoAway
// however the session fails, and options left undefined keep their defaults.
import { describe, it, expect } from 'vitest';
import { Flag, FrameType, GoAwayCode, Session, type SessionError } from '../src/index.js';
import { CaptureTransport, deadline, frame, parseFrames, turn } from './helpers.js';

function session(cap = new CaptureTransport()) {
  const s = new Session(cap, { client: true, keepaliveIntervalMs: 0, ackDelayMs: 0 });
  const closes: Array<SessionError | undefined> = [];
  s.on('close', (e?: SessionError) => closes.push(e));
  return { cap, s, closes };
}

describe('the transport closing', () => {
  it('after the peer sent a normal GoAway, is a clean close', () => {
    const t = session();
    t.cap.feed(frame(FrameType.GoAway, 0, 0, GoAwayCode.Normal));
    t.cap.h!.close();
    expect(t.closes).toEqual([undefined]);
    expect(t.cap.destroyed).toBe(true);
  });

  it('otherwise, is TRANSPORT_CLOSED, with the reason when there is one; the transport is destroyed', () => {
    const a = session();
    a.cap.h!.close();
    expect(a.closes.map((e) => [e?.code, e?.message])).toEqual([['TRANSPORT_CLOSED', 'transport closed']]);
    expect(a.cap.destroyed).toBe(true);
    expect(a.cap.ended).toBe(false);
    const b = session();
    b.cap.feed(frame(FrameType.GoAway, 0, 0, GoAwayCode.Normal));
    b.cap.h!.close(new Error('boom'));
    expect(b.closes.map((e) => [e?.code, e?.message])).toEqual([['TRANSPORT_CLOSED', 'transport closed: boom']]);
  });

  it("'close' is emitted once, however many ends arrive", () => {
    const t = session();
    t.s.destroy();
    t.cap.h!.close();
    t.s.destroy();
    t.s.close();
    expect(t.closes).toHaveLength(1);
  });
});

describe('destroy and close', () => {
  it('destroy() drops what is batched: nothing more is written', async () => {
    const t = session();
    t.s.goAway(); // batched until the next turn
    t.s.destroy();
    await turn();
    expect(t.cap.written).toEqual([]);
    expect(t.cap.destroyed).toBe(true);
  });

  it('a pending ping is rejected at once when the session ends, saying so', async () => {
    const t = session();
    const p = t.s.ping(60_000);
    t.s.close();
    const err = (await deadline(p.then(() => undefined, (e: SessionError) => e), 2000, 'ping rejected')) as SessionError;
    expect([err.code, err.message]).toEqual(['CLOSED', 'session closed']);
  });

  it('a protocol error sends one GoAway(1) and marks it sent', () => {
    const t = session();
    t.cap.feed(frame(FrameType.Data, 0, 0, 0));
    expect(t.s.localGoAway).toBe(true);
    expect(parseFrames(t.cap.output()).frames).toEqual([expect.objectContaining({ type: FrameType.GoAway, length: GoAwayCode.ProtocolError })]);
  });

  it('a protocol error after our own GoAway sends no second GoAway', async () => {
    const t = session();
    t.s.goAway();
    t.cap.feed(frame(FrameType.Data, 0, 0, 0)); // illegal: Data on stream 0
    expect(t.closes[0]!.code).toBe('PROTOCOL_ERROR');
    expect(t.s.localGoAway).toBe(true);
    const goAways = parseFrames(t.cap.output()).frames.filter((f) => f.type === FrameType.GoAway);
    expect(goAways).toEqual([expect.objectContaining({ length: GoAwayCode.Normal })]);
  });
});

describe('options', () => {
  it('an option given as undefined keeps its default', () => {
    const cap = new CaptureTransport();
    const s = new Session(cap, { client: true, keepaliveIntervalMs: 0, maxStreams: undefined, maxStreamWindow: undefined });
    expect(s.canOpen).toBe(true);
    const st = s.openStream();
    st.on('error', () => {});
    expect(st.id).toBe(1);
    cap.feed(frame(FrameType.WindowUpdate, Flag.ACK, 1, 0));
    s.destroy();
  });
});

describe('openStream() and ping() refusals say why', () => {
  it('on a closed session: canOpen is false, openStream() and ping() refuse with CLOSED', async () => {
    const t = session();
    t.s.destroy();
    expect(t.s.canOpen).toBe(false);
    expect(() => t.s.openStream()).toThrow(expect.objectContaining({ code: 'CLOSED', message: 'session is closed' }));
    const err = (await t.s.ping().catch((e: SessionError) => e)) as SessionError;
    expect([err.code, err.message]).toEqual(['CLOSED', 'session is closed']);
  });

  it('after the peer sent GoAway, with the stream limit reached, and with the ids used up', () => {
    const a = session();
    a.cap.feed(frame(FrameType.GoAway, 0, 0, GoAwayCode.Normal));
    expect(() => a.s.openStream()).toThrow(expect.objectContaining({ code: 'GOAWAY', message: 'peer sent GoAway: no new streams' }));
    a.s.destroy();

    const cap = new CaptureTransport();
    const b = new Session(cap, { client: true, keepaliveIntervalMs: 0, maxStreams: 1 });
    b.openStream().on('error', () => {});
    expect(() => b.openStream()).toThrow(expect.objectContaining({ code: 'STREAM_LIMIT', message: 'stream limit reached (1)' }));
    b.destroy();

    // Opening 2^31 streams is out of reach for a test: start the client's odd ids near the top.
    const c = session();
    Reflect.set(c.s, 'nextId', 0xfffffffd);
    const ids = [c.s.openStream(), c.s.openStream()].map((st) => st.on('error', () => {}).id);
    expect(ids).toEqual([0xfffffffd, 0xffffffff]); // the last valid id is still handed out
    expect(() => c.s.openStream()).toThrow(expect.objectContaining({ code: 'STREAM_LIMIT', message: 'stream ids exhausted' }));
    c.s.destroy();
  });

  it('a ping the peer never answers is rejected after its timeout, saying how long it waited', async () => {
    const t = session();
    const err = (await deadline(t.s.ping(20).then(() => undefined, (e: SessionError) => e), 2000, 'ping timeout')) as SessionError;
    expect([err.code, err.message]).toEqual(['KEEPALIVE_TIMEOUT', 'no ping answer within 20 ms']);
    t.s.destroy();
  });
});
