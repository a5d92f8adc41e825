// Over 500 lines: one session's semantics by topic (streams, GoAway, keepalive, limits, delayed ACK, flow control), all on the pair helpers of helpers.ts.
// Stream and session semantics: half-close, reset, GoAway, keepalive, limits,
// accept backlog, session buffer limit, window growth.
import { describe, it, expect } from 'vitest';
import {
  Flag,
  FrameType,
  GoAwayCode,
  INITIAL_WINDOW,
  Session,
  SessionError,
  YamuxStream,
  type Transport,
  type TransportHandlers,
} from '../src/index.js';
import {
  CaptureTransport,
  PatternChecker,
  collect,
  deadline,
  frame,
  nextEvent,
  parseFrames,
  patternBytes,
  sessionPair,
  streamError,
  turn,
  waitFor,
  writeFinished,
} from './helpers.js';

/** Write `total` pattern bytes in `chunk`-sized writes, honouring backpressure, then end. */
async function pump(s: YamuxStream, seed: number, total: number, chunk = 64 * 1024): Promise<void> {
  let off = 0;
  while (off < total) {
    const n = Math.min(chunk, total - off);
    if (!s.write(patternBytes(seed, off, n))) {
      await deadline(new Promise<void>((r) => s.once('drain', () => r())), 10_000, `drain on stream ${s.id}`);
    }
    off += n;
  }
  s.end();
}

function checked(s: YamuxStream, seed: number): Promise<PatternChecker> {
  const c = new PatternChecker(seed);
  return new Promise((resolve, reject) => {
    s.on('data', (b: Buffer) => c.push(b));
    s.on('end', () => resolve(c));
    s.on('error', reject);
  });
}

describe('streams', () => {
  it('echoes a stream with half-close', async () => {
    const { client, server } = sessionPair();
    server.on('stream', (s) => {
      collect(s).then((b) => s.end(Buffer.concat([Buffer.from('echo:'), b])));
    });
    const s = client.openStream();
    s.end('hello');
    expect((await deadline(collect(s), 5000, 'echo')).toString()).toBe('echo:hello');
    await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2000, 'maps empty');
    client.close();
  });

  it('uses odd ids for the client and even ids for the server', async () => {
    const { client, server } = sessionPair();
    const seen: number[] = [];
    client.on('stream', (s) => {
      seen.push(s.id);
      s.resume();
      s.end();
    });
    server.on('stream', (s) => {
      seen.push(s.id);
      s.resume();
      s.end();
    });
    const c = [client.openStream(), client.openStream()];
    const sv = [server.openStream(), server.openStream()];
    expect(c.map((s) => s.id)).toEqual([1, 3]);
    expect(sv.map((s) => s.id)).toEqual([2, 4]);
    for (const s of [...c, ...sv]) s.end();
    await Promise.all([...c, ...sv].map((s) => deadline(collect(s), 5000, 'end')));
    expect(seen.sort()).toEqual([1, 2, 3, 4]);
    await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2000, 'maps empty');
    client.close();
  });

  it('FIN ends the peer readable while the other direction keeps flowing', async () => {
    const { client, server } = sessionPair();
    const accepted = nextEvent(server, 'stream');
    const s = client.openStream();
    s.end('request');
    const [ss] = (await accepted) as [YamuxStream];
    // Server reads the request to its end (FIN) before writing anything back.
    const req = await deadline(collect(ss), 5000, 'request end');
    expect(req.toString()).toBe('request');
    expect(ss.readableEnded).toBe(true);
    expect(ss.writable).toBe(true);
    expect(ss.state).toBe('remote_closed');
    expect(s.state).toBe('local_closed');
    // 3 MiB back over the half-closed stream (several windows' worth).
    const got = checked(s, 7);
    await pump(ss, 7, 3 * 1024 * 1024);
    const c = await deadline(got, 10_000, 'response end');
    expect(c.bad).toBe(-1);
    expect(c.received).toBe(3 * 1024 * 1024);
    await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2000, 'maps empty');
    expect(s.state).toBe('closed');
    expect(ss.state).toBe('closed');
    client.close();
  });

  it('both sides half-close in either order; data written after the peer FIN still arrives', async () => {
    const { client, server } = sessionPair();
    server.on('stream', (ss) => {
      // Server closes its side first, then keeps reading.
      ss.end('bye');
      ss.resume();
    });
    const s = client.openStream();
    const resp = collect(s);
    expect((await deadline(resp, 5000, 'server FIN')).toString()).toBe('bye');
    expect(s.state).toBe('remote_closed');
    // Client writes after the peer's FIN, then ends.
    s.write('late data');
    s.end();
    await writeFinished(s);
    await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2000, 'maps empty');
    client.close();
  });

  it('RST from the opener errors the acceptor with ERR_STREAM_RESET and frees both ids', async () => {
    const { client, server, c2s } = sessionPair();
    const accepted = nextEvent(server, 'stream');
    const s = client.openStream();
    s.write('some');
    const [ss] = (await accepted) as [YamuxStream];
    const err = streamError(ss);
    s.on('error', () => {});
    s.destroy();
    expect(client.streamCount).toBe(0);
    const e = await err;
    expect(e.code).toBe('ERR_STREAM_RESET');
    expect(ss.state).toBe('reset');
    expect(server.streamCount).toBe(0);
    expect(c2s.frames.some((f) => f.type === FrameType.WindowUpdate && f.flags & Flag.RST && f.streamId === s.id)).toBe(true);
    // The session is unaffected.
    const s2 = client.openStream();
    server.once('stream', (x: YamuxStream) => x.end('ok'));
    s2.end();
    expect((await deadline(collect(s2), 5000, 'next stream')).toString()).toBe('ok');
    client.close();
  });

  it('RST from the acceptor mid-transfer errors the opener, in both directions', async () => {
    const { client, server } = sessionPair();
    server.on('stream', (ss: YamuxStream) => {
      ss.once('data', () => ss.destroy());
      ss.on('error', () => {});
    });
    const s = client.openStream();
    const err = streamError(s);
    // The writer may be mid-way through a large write when the RST lands.
    s.write(Buffer.alloc(2 * 1024 * 1024));
    const e = await err;
    expect(e.code).toBe('ERR_STREAM_RESET');
    await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2000, 'maps empty');

    // Reset after a half-close: the FIN'd side still sees the reset.
    server.removeAllListeners('stream');
    const accepted = nextEvent(server, 'stream');
    const s2 = client.openStream();
    s2.end('x');
    const [ss2] = (await accepted) as [YamuxStream];
    await deadline(collect(ss2), 5000, 'half-closed');
    const e2 = streamError(s2);
    ss2.destroy();
    expect((await e2).code).toBe('ERR_STREAM_RESET');
    await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2000, 'maps empty');
    client.close();
  });

  it('destroying a session aborts its streams with an error and the peer sees the transport close', async () => {
    const { client, server } = sessionPair();
    const accepted = nextEvent(server, 'stream');
    const s = client.openStream();
    s.write('x');
    const [ss] = (await accepted) as [YamuxStream];
    const e1 = streamError(s);
    const e2 = streamError(ss);
    const serverClose = nextEvent(server, 'close');
    client.destroy();
    expect((await e1).name).toBe('SessionError');
    const [err] = (await serverClose) as [SessionError];
    expect(err.code).toBe('TRANSPORT_CLOSED');
    expect((await e2).name).toBe('SessionError');
    expect(client.streamCount).toBe(0);
    expect(server.streamCount).toBe(0);
    expect(() => client.openStream()).toThrow(expect.objectContaining({ code: 'CLOSED' }));
  });
});

describe('GoAway', () => {
  it('normal GoAway: the peer cannot open new streams, existing ones finish', async () => {
    const { client, server } = sessionPair();
    const accepted = nextEvent(server, 'stream');
    const s = client.openStream();
    s.write('before');
    const [ss] = (await accepted) as [YamuxStream];
    const goaway = nextEvent(client, 'goaway');
    server.goAway();
    expect(server.localGoAway).toBe(true);
    expect(await goaway).toEqual([GoAwayCode.Normal]);
    expect(client.remoteGoAway).toBe(GoAwayCode.Normal);
    expect(client.canOpen).toBe(false);
    let thrown: unknown;
    try {
      client.openStream();
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(SessionError);
    expect((thrown as SessionError).code).toBe('GOAWAY');
    // The server may still open streams towards the client, and the old one finishes.
    client.on('stream', (x: YamuxStream) => x.end('from client'));
    const sv = server.openStream();
    sv.end();
    expect((await deadline(collect(sv), 5000, 'server-opened after goaway')).toString()).toBe('from client');
    const req = collect(ss);
    ss.end('after');
    s.end('!');
    expect((await deadline(collect(s), 5000, 'old stream')).toString()).toBe('after');
    expect((await req).toString()).toBe('before!');
    expect(client.closed).toBe(false);
    expect(server.closed).toBe(false);
    await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2000, 'maps empty');
    client.close();
  });

  it('a SYN arriving after our GoAway is reset', async () => {
    const cap = new CaptureTransport();
    const server = new Session(cap, { client: false, keepaliveIntervalMs: 0 });
    server.on('stream', () => expect.fail('no stream after GoAway'));
    server.goAway();
    cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    await turn();
    const out = cap.output();
    // GoAway(normal), then RST for stream 1.
    expect(out.subarray(0, 12)).toEqual(frame(FrameType.GoAway, 0, 0, GoAwayCode.Normal));
    expect(out.subarray(12, 24)).toEqual(frame(FrameType.WindowUpdate, Flag.RST, 1, 0));
    expect(server.streamCount).toBe(0);
    server.destroy();
  });

  it('a protocol-error GoAway from the peer is surfaced and closes the session', async () => {
    const { client, server } = sessionPair();
    const goaway = nextEvent(client, 'goaway');
    const closed = nextEvent(client, 'close');
    server.goAway(GoAwayCode.ProtocolError);
    expect(await goaway).toEqual([GoAwayCode.ProtocolError]);
    const [err] = (await closed) as [SessionError];
    expect(err).toBeInstanceOf(SessionError);
    expect(err.code).toBe('GOAWAY');
    expect(err.message).toMatch(/protocol error/);
    expect(client.closed).toBe(true);
    server.destroy();
  });

  it('an invalid frame closes the session with PROTOCOL_ERROR and the peer sees GoAway code 1', async () => {
    const { client, server, a, s2c } = sessionPair();
    const serverClosed = nextEvent(server, 'close');
    const clientGoaway = nextEvent(client, 'goaway');
    const clientClosed = nextEvent(client, 'close');
    // Bypass the client session: a frame with yamux version 1.
    a.write(Buffer.from([1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]));
    const [serr] = (await serverClosed) as [SessionError];
    expect(serr.code).toBe('PROTOCOL_ERROR');
    expect(serr.message).toMatch(/version/);
    expect(await clientGoaway).toEqual([GoAwayCode.ProtocolError]);
    const [cerr] = (await clientClosed) as [SessionError];
    expect(cerr.code).toBe('GOAWAY');
    const last = s2c.frames[s2c.frames.length - 1]!;
    expect(last).toMatchObject({ type: FrameType.GoAway, streamId: 0, length: GoAwayCode.ProtocolError });
  });

  it('close() sends a normal GoAway, flushes, and ends the transport', async () => {
    const { client, server, c2s } = sessionPair();
    const goaway = nextEvent(server, 'goaway');
    const serverClosed = nextEvent(server, 'close');
    const clientClosed = nextEvent(client, 'close');
    client.close();
    expect(await goaway).toEqual([GoAwayCode.Normal]);
    expect(await clientClosed).toEqual([undefined]);
    await serverClosed;
    expect(c2s.frames).toEqual([expect.objectContaining({ type: FrameType.GoAway, length: 0 })]);
  });
});

describe('keepalive', () => {
  it('ping() measures a round trip and keepalive updates rtt', async () => {
    const { client, server } = sessionPair({ keepaliveIntervalMs: 20, keepaliveTimeoutMs: 2000 });
    const ms = await client.ping();
    expect(ms).toBeGreaterThanOrEqual(0);
    expect(ms).toBeLessThan(2000);
    expect(client.rtt).toBe(ms);
    const ms2 = await server.ping();
    expect(server.rtt).toBe(ms2);
    // The keepalive timer keeps measuring: rtt gets replaced by a fresh sample.
    const before = { c: client.rtt, s: server.rtt };
    await waitFor(() => client.rtt !== before.c && server.rtt !== before.s, 5000, 'keepalive pings');
    expect(client.closed).toBe(false);
    client.close();
  });

  it('a peer that stops answering closes the session with KEEPALIVE_TIMEOUT within interval + timeout', async () => {
    // A transport that swallows every write: nothing ever answers.
    let destroyed = false;
    const black: Transport = {
      send: () => true,
      end: () => {},
      destroy: () => {
        destroyed = true;
      },
      attach: (_h: TransportHandlers) => {},
    };
    const interval = 50;
    const timeout = 150;
    const t0 = Date.now();
    const s = new Session(black, { client: true, keepaliveIntervalMs: interval, keepaliveTimeoutMs: timeout });
    const open = s.openStream();
    const streamErr = streamError(open, 3000);
    const [err] = (await nextEvent(s, 'close', 3000)) as [SessionError];
    const elapsed = Date.now() - t0;
    expect(err).toBeInstanceOf(SessionError);
    expect(err.code).toBe('KEEPALIVE_TIMEOUT');
    expect(elapsed).toBeGreaterThanOrEqual(interval + timeout - 5);
    expect(elapsed).toBeLessThan(interval + timeout + 1000);
    expect(destroyed).toBe(true);
    expect(s.closed).toBe(true);
    expect((await streamErr).name).toBe('SessionError');
  });

  it('an explicit ping() to a dead peer rejects after its timeout; a pending ping rejects on close', async () => {
    const cap = new CaptureTransport();
    const s = new Session(cap, { client: true, keepaliveIntervalMs: 0 });
    await expect(s.ping(30)).rejects.toMatchObject({ code: 'KEEPALIVE_TIMEOUT' });
    expect(s.closed).toBe(false);
    const p = s.ping(10_000);
    s.close();
    await expect(p).rejects.toBeInstanceOf(SessionError);
    await expect(s.ping()).rejects.toMatchObject({ code: 'CLOSED' });
  });

  it('answers a ping with the same opaque value', async () => {
    const cap = new CaptureTransport();
    const s = new Session(cap, { client: false, keepaliveIntervalMs: 0 });
    cap.feed(frame(FrameType.Ping, Flag.SYN, 0, 0xdeadbeef));
    await turn();
    expect(cap.output()).toEqual(frame(FrameType.Ping, Flag.ACK, 0, 0xdeadbeef));
    s.destroy();
  });
});

describe('limits', () => {
  it('maxStreams: SYNs beyond the limit are reset; openStream() beyond ours throws', async () => {
    const { client, server } = sessionPair({}, { maxStreams: 5 });
    const accepted: YamuxStream[] = [];
    server.on('stream', (s: YamuxStream) => {
      accepted.push(s);
      s.on('error', () => {}); // the session is destroyed with these open
    });
    const opened = Array.from({ length: 8 }, () => client.openStream());
    const results = opened.map((s) =>
      new Promise<string>((resolve) => {
        s.on('error', (e: Error & { code?: string }) => resolve(e.code ?? 'error'));
        s.on('data', () => resolve('data'));
      }),
    );
    await waitFor(() => accepted.length === 5, 2000, '5 accepted');
    for (const s of accepted) s.write('hi');
    const r = await deadline(Promise.all(results), 5000, 'results');
    expect(r).toEqual(['data', 'data', 'data', 'data', 'data', 'ERR_STREAM_RESET', 'ERR_STREAM_RESET', 'ERR_STREAM_RESET']);
    expect(server.streamCount).toBe(5);
    expect(server.canOpen).toBe(false);
    expect(() => server.openStream()).toThrow(expect.objectContaining({ code: 'STREAM_LIMIT' }));
    // Finishing one frees a slot.
    const s0 = opened[0]!;
    s0.resume();
    s0.end();
    accepted[0]!.resume();
    accepted[0]!.end();
    await waitFor(() => server.streamCount === 4, 2000, 'slot freed');
    const more = client.openStream();
    more.on('error', () => {});
    await waitFor(() => accepted.length === 6, 2000, 'accepted after a slot freed');
    expect(accepted[5]!.id).toBe(more.id);
    client.destroy();
  });

  it('accept backlog: without a listener SYNs beyond the backlog are reset; a late listener gets the queued ones', async () => {
    const { client, server, s2c } = sessionPair({}, { acceptBacklog: 3 });
    const opened = Array.from({ length: 5 }, (_, i) => {
      const s = client.openStream();
      s.end(`req ${i}`);
      return s;
    });
    const errs = [streamError(opened[3]!), streamError(opened[4]!)];
    expect((await errs[0]!).code).toBe('ERR_STREAM_RESET');
    expect((await errs[1]!).code).toBe('ERR_STREAM_RESET');
    // Queued streams are not ACKed until accepted.
    expect(s2c.frames.filter((f) => f.flags & Flag.ACK)).toHaveLength(0);
    expect(server.streamCount).toBe(3);
    const got: string[] = [];
    server.on('stream', (s: YamuxStream) => {
      collect(s).then((b) => {
        got.push(b.toString());
        s.end(`res ${b.toString()}`);
      });
    });
    const replies = await deadline(Promise.all(opened.slice(0, 3).map((s) => collect(s))), 5000, 'late accept');
    expect(replies.map(String)).toEqual(['res req 0', 'res req 1', 'res req 2']);
    expect(got.sort()).toEqual(['req 0', 'req 1', 'req 2']);
    await waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2000, 'maps empty');
    client.close();
  });

  it('a once() listener takes one backlogged stream; the rest stay queued for the next listener', async () => {
    const cap = new CaptureTransport();
    const s = new Session(cap, { client: false, keepaliveIntervalMs: 0, ackDelayMs: 0 });
    for (const id of [1, 3, 5]) cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, id, 0));
    const [first] = (await nextEvent(s, 'stream')) as [YamuxStream];
    first.on('error', () => {});
    expect(first.id).toBe(1);
    await turn();
    expect(s.streamCount).toBe(3);
    const rest: number[] = [];
    s.on('stream', (x: YamuxStream) => {
      x.on('error', () => {});
      rest.push(x.id);
    });
    await turn();
    expect(rest).toEqual([3, 5]);
    await turn(); // the ACKs' batch
    // Each stream was ACKed exactly once, when it was handed out.
    const acks = parseFrames(cap.output()).frames.filter((f) => f.flags & Flag.ACK);
    expect(acks.map((f) => f.streamId)).toEqual([1, 3, 5]);
    s.destroy();
  });

  it('a backlogged stream reset by the peer, or aborted by the session closing, raises no uncaught error', async () => {
    const cap = new CaptureTransport();
    const s = new Session(cap, { client: false, keepaliveIntervalMs: 0 });
    cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 3, 0));
    cap.feed(frame(FrameType.Data, 0, 3, 5, Buffer.from('hello')));
    expect(s.streamCount).toBe(2);
    // Peer resets stream 1 while it waits for a listener.
    cap.feed(frame(FrameType.WindowUpdate, Flag.RST, 1, 0));
    await turn();
    expect(s.streamCount).toBe(1);
    // A late listener gets only the live one, with its data, and owns its errors.
    const got: YamuxStream[] = [];
    s.on('stream', (x: YamuxStream) => got.push(x));
    await turn();
    expect(got.map((x) => x.id)).toEqual([3]);
    expect(got[0]!.listenerCount('error')).toBe(0);
    expect((got[0]!.read() as Buffer).toString()).toBe('hello');
    got[0]!.on('error', () => {});
    // And a session closing over a backlog it never delivered.
    const cap2 = new CaptureTransport();
    const s2 = new Session(cap2, { client: false, keepaliveIntervalMs: 0 });
    cap2.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    s2.destroy();
    s.destroy();
    await turn();
    expect(s2.streamCount).toBe(0);
  });

  it('a stream destroyed with unread bytes releases them once, even when Node reads it on the next tick', async () => {
    const cap = new CaptureTransport();
    const s = new Session(cap, { client: false, keepaliveIntervalMs: 0 });
    const got: YamuxStream[] = [];
    s.on('stream', (x: YamuxStream) => {
      got.push(x);
      x.on('error', () => {});
    });
    // Data then RST in the same tick: the push schedules Node's read(0) for
    // the next tick, which runs after the destroy.
    cap.feed(
      Buffer.concat([
        frame(FrameType.WindowUpdate, Flag.SYN, 1, 0),
        frame(FrameType.Data, 0, 1, 1000, Buffer.alloc(1000)),
        frame(FrameType.WindowUpdate, Flag.RST, 1, 0),
      ]),
    );
    expect(got[0]!.destroyed).toBe(true);
    expect(s.bufferedBytes).toBe(0);
    await turn();
    expect(s.bufferedBytes).toBe(0);
    s.destroy();
  });

  it('maxSessionBuffered: a stream that pushes unread bytes past the limit is reset, the session and others survive', async () => {
    const limit = 512 * 1024;
    const { client, server } = sessionPair({}, { maxSessionBuffered: limit });
    const accepted: YamuxStream[] = [];
    const serverErrors: Array<Error & { code?: string }> = [];
    server.on('stream', (s: YamuxStream) => {
      accepted.push(s);
      s.on('error', (e: Error & { code?: string }) => serverErrors.push(e));
    });
    // Two unread streams, each allowed a 1 MiB window, together overrun 512 KiB.
    const s1 = client.openStream();
    const s2 = client.openStream();
    const errs = [s1, s2].map(
      (s) => new Promise<string | undefined>((resolve) => s.on('error', (e: Error & { code?: string }) => resolve(e.code))),
    );
    s1.write(Buffer.alloc(400 * 1024, 1));
    await waitFor(() => server.bufferedBytes === 400 * 1024, 2000, 'first stream buffered');
    s2.write(Buffer.alloc(400 * 1024, 2));
    const code = await deadline(Promise.race(errs), 5000, 'a stream reset');
    expect(code).toBe('ERR_STREAM_RESET');
    expect(server.bufferedBytes).toBeLessThanOrEqual(limit);
    expect(serverErrors).toHaveLength(1);
    expect((serverErrors[0] as SessionError).code).toBe('INTERNAL_ERROR');
    expect(server.closed).toBe(false);
    // The survivor is still readable in full.
    const survivor = accepted.find((s) => !s.destroyed)!;
    expect(survivor.id).toBe(s1.id);
    s1.end();
    const b = await deadline(collect(survivor), 5000, 'survivor');
    expect(b.length).toBe(400 * 1024);
    await waitFor(() => server.bufferedBytes === 0, 2000, 'buffer released');
    client.destroy();
  });

  it('rejects a Data frame longer than maxFrameLength with a protocol error', async () => {
    const cap = new CaptureTransport();
    const s = new Session(cap, { client: false, keepaliveIntervalMs: 0, maxFrameLength: 1000 });
    s.on('stream', (x: YamuxStream) => x.on('error', () => {}));
    const closed = nextEvent(s, 'close');
    cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    cap.feed(frame(FrameType.Data, 0, 1, 1001));
    const [err] = (await closed) as [SessionError];
    expect(err.code).toBe('PROTOCOL_ERROR');
    const out = cap.output();
    expect(out.subarray(out.length - 12)).toEqual(frame(FrameType.GoAway, 0, 0, GoAwayCode.ProtocolError));
    expect(cap.ended).toBe(true);
  });
});

describe('delayed ACK', () => {
  const accepted = async (ackDelayMs?: number) => {
    const cap = new CaptureTransport();
    const s = new Session(cap, { client: false, keepaliveIntervalMs: 0, ...(ackDelayMs === undefined ? {} : { ackDelayMs }) });
    const got = nextEvent(s, 'stream');
    cap.feed(frame(FrameType.WindowUpdate, Flag.SYN, 1, 0));
    const [st] = (await got) as [YamuxStream];
    st.on('error', () => {});
    return { cap, s, st };
  };

  it('the ACK and its window bonus ride in the same message as the first data frame', async () => {
    const { cap, s, st } = await accepted();
    await turn();
    expect(cap.written.length).toBe(0); // no bare ACK message
    st.write(Buffer.from('response head'));
    await turn();
    expect(cap.written.length).toBe(1);
    const frames = parseFrames(cap.written[0]!).frames;
    expect(frames.map((f) => [f.type, f.flags, f.streamId])).toEqual([
      [FrameType.WindowUpdate, Flag.ACK, 1],
      [FrameType.Data, 0, 1],
    ]);
    expect(frames[0]!.length).toBe(4 * 1024 * 1024 - INITIAL_WINDOW); // the default window's bonus
    s.destroy();
  });

  it('a FIN with nothing written carries the ACK; a reset needs none', async () => {
    const a = await accepted();
    a.st.end();
    a.st.resume();
    await turn();
    const fin = parseFrames(a.cap.output()).frames;
    expect(fin).toHaveLength(1);
    expect(fin[0]!.flags).toBe(Flag.FIN | Flag.ACK);
    a.s.destroy();

    const b = await accepted();
    b.st.destroy();
    await turn();
    const rst = parseFrames(b.cap.output()).frames;
    expect(rst.map((f) => f.flags)).toEqual([Flag.RST]);
    b.s.destroy();
  });

  it('a stream that sends nothing is acknowledged within ackDelayMs, once', async () => {
    const { cap, s, st } = await accepted(5);
    await waitFor(() => cap.written.length > 0, 2_000, 'bare ACK');
    const frames = parseFrames(cap.output()).frames;
    expect(frames.map((f) => [f.type, f.flags, f.streamId])).toEqual([[FrameType.WindowUpdate, Flag.ACK, 1]]);
    // Data written after the timer's ACK carries no second one.
    st.write(Buffer.from('late'));
    await turn();
    expect(parseFrames(cap.output()).frames.map((f) => [f.type, f.flags])).toEqual([
      [FrameType.WindowUpdate, Flag.ACK],
      [FrameType.Data, 0],
    ]);
    s.destroy();
  });

  it('ackDelayMs 0 acknowledges at once, as hashicorp/yamux does', async () => {
    const { cap, s } = await accepted(0);
    await turn();
    expect(parseFrames(cap.output()).frames.map((f) => f.flags)).toEqual([Flag.ACK]);
    s.destroy();
  });
});

describe('flow control', () => {
  it('the window is returned when the consumer reads, not when bytes arrive', async () => {
    const { client, server, s2c } = sessionPair({ maxStreamWindow: INITIAL_WINDOW });
    const accepted = nextEvent(server, 'stream');
    const s = client.openStream();
    s.write(Buffer.alloc(INITIAL_WINDOW + 1000));
    const [ss] = (await accepted) as [YamuxStream];
    s.on('error', () => {});
    ss.on('error', () => {});
    await waitFor(() => ss.receiveBuffered === INITIAL_WINDOW, 2000, 'window filled');
    await client.ping();
    await server.ping();
    // No window update for the stream yet: nothing was read.
    const updates = () => s2c.frames.filter((f) => f.type === FrameType.WindowUpdate && f.streamId === s.id && f.length > 0);
    expect(updates()).toHaveLength(0);
    expect(ss.receiveBuffered).toBe(INITIAL_WINDOW);
    // Reading half the window gives it back.
    ss.read(INITIAL_WINDOW / 2);
    await waitFor(() => updates().length === 1, 2000, 'window update after read');
    expect(updates()[0]!.length).toBe(INITIAL_WINDOW / 2);
    await waitFor(() => ss.readableLength === INITIAL_WINDOW / 2 + 1000, 2000, 'rest arrived');
    client.destroy();
  });

  it('maxStreamWindow 16 MiB lets one stream send > 256 KiB before any consumption window update (both directions)', async () => {
    const W = 16 * 1024 * 1024;
    const { client, server, c2s, s2c } = sessionPair({ maxStreamWindow: W });
    const accepted = nextEvent(server, 'stream');
    const s = client.openStream();
    const [ss] = (await accepted) as [YamuxStream];
    s.on('error', () => {});
    ss.on('error', () => {});
    // Neither side reads; each writes 8 MiB.
    const n = 8 * 1024 * 1024;
    s.write(Buffer.alloc(n, 1));
    ss.write(Buffer.alloc(n, 2));
    await waitFor(() => ss.receiveBuffered === n && s.receiveBuffered === n, 10_000, '8 MiB buffered each way');
    // The only window frames are the SYN and the ACK, each carrying the bonus.
    const bonus = W - INITIAL_WINDOW;
    const cw = c2s.frames.filter((f) => f.type === FrameType.WindowUpdate);
    const sw = s2c.frames.filter((f) => f.type === FrameType.WindowUpdate);
    expect(cw).toEqual([expect.objectContaining({ flags: Flag.SYN, streamId: s.id, length: bonus })]);
    expect(sw).toEqual([expect.objectContaining({ flags: Flag.ACK, streamId: s.id, length: bonus })]);
    client.destroy();
  });
});
