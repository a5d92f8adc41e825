// RelayConnection against a scripted relay on a real WebSocket listener on
// 127.0.0.1 (real yamux session, real control stream), its timers on a fake
// clock: the state machine dialing → registering → registered → draining →
// closed, the registration timeout, a missed heartbeat, GoAway, the drain
// handshake, and how a refusal is classified (final or retried).
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { YamuxStream } from '@tunnel/protocol';
import { RelayConnection, type CloseReason, type RelayConnOptions } from '../src/ha/relay-connection.js';
import { waitFor } from '../../../test/harness/wait.js';
import { ScriptedRelay, type RelayEnd } from './scripted-relay.js';
import { fakeClock, type FakeClock } from './fake-clock.js';

const silent = pino({ level: 'silent' });
const relays: ScriptedRelay[] = [];
const conns: RelayConnection[] = [];

afterEach(async () => {
  for (const c of conns.splice(0)) c.abort({ kind: 'local', message: 'test over' });
  await Promise.all(relays.splice(0).map((r) => r.close()));
});

async function relay(id = 'relay-a'): Promise<ScriptedRelay> {
  const r = await ScriptedRelay.start(id);
  relays.push(r);
  return r;
}

interface Watched {
  conn: RelayConnection;
  clock: FakeClock;
  /** Streams handed to onStream. */
  streams: YamuxStream[];
  /** Every event, in order, with the state seen when it fired. */
  events: string[];
  closed: () => CloseReason | null;
}

function connect(r: ScriptedRelay, extra: Partial<RelayConnOptions> = {}): Watched {
  const clock = fakeClock();
  const streams: YamuxStream[] = [];
  const events: string[] = [];
  let reason: CloseReason | null = null;
  const conn = new RelayConnection({
    relayUrl: r.url,
    token: 'tok-1',
    connectorId: 'connector-1',
    connIndex: 2,
    version: 'test',
    log: silent,
    clock,
    onStream: (s) => {
      s.on('error', () => {});
      streams.push(s);
    },
    ...extra,
  });
  conns.push(conn);
  conn.on('registered', () => events.push(`registered:${conn.state}`));
  conn.on('goaway', () => events.push(`goaway:${conn.state}`));
  conn.on('closed', (why) => {
    events.push(`closed:${conn.state}`);
    reason = why;
  });
  return { conn, clock, streams, events, closed: () => reason };
}

async function registered(r: ScriptedRelay, w: Watched): Promise<RelayEnd> {
  await waitFor(() => w.conn.state === 'registered', 5_000, { message: 'registered' });
  return r.ends.at(-1)!;
}

/** Everything a stream delivers until it ends. */
function readAll(s: YamuxStream): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (c: Buffer) => parts.push(c));
    s.on('end', () => resolve(Buffer.concat(parts).toString()));
    s.on('error', reject);
  });
}

describe('RelayConnection state machine', () => {
  it('walks dialing → registering → registered, presenting the credential and its identity, and serves streams only once registered', async () => {
    const r = await relay();
    r.script.confirm = false;
    const w = connect(r);
    expect(w.conn.state).toBe('dialing');

    const end = await waitFor(() => r.ends[0]?.registered && r.ends[0], 5_000, { message: 'register message' });
    expect(w.conn.state).toBe('registering');
    expect(end.registered).toMatchObject({ connectorId: 'connector-1', connIndex: 2, version: 'test' });
    expect(end.headers['authorization']).toBe('Bearer tok-1');
    expect(end.headers['tunnel-connector-id']).toBe('connector-1');
    expect(end.headers['tunnel-conn-index']).toBe('2');

    // Before the relay confirms, a request stream is refused, not served.
    const early = end.openStream();
    await waitFor(() => early.destroyed || early.readableEnded, 5_000, { message: 'early stream refused' });
    expect(w.streams).toHaveLength(0);

    await w.clock.advance(3_000);
    end.confirm();
    await registered(r, w);
    expect(w.events).toEqual(['registered:registered']);
    expect(w.conn.relayId).toBe('relay-a');
    expect(w.conn.connectionId).toBe('relay-a-conn-0');
    expect(w.conn.registeredAt).toBe(w.clock.now());

    const s = end.openStream();
    s.end('ping');
    await waitFor(() => w.streams.length === 1, 5_000, { message: 'stream handed to onStream' });
    expect(await readAll(w.streams[0]!)).toBe('ping');
    expect(w.closed()).toBeNull();
  });

  it('ends a registration the relay never confirms after 10 s on the clock, as a retryable network failure', async () => {
    const r = await relay();
    r.script.confirm = false;
    const w = connect(r);
    await waitFor(() => r.ends[0]?.registered, 5_000, { message: 'register message' });
    expect(w.conn.state).toBe('registering');

    await w.clock.advance(9_999);
    expect(w.conn.state).toBe('registering');
    await w.clock.advance(1);
    expect(w.conn.state).toBe('closed');
    expect(w.closed()).toEqual({ kind: 'network', message: 'relay did not confirm registration within 10 s' });
    await waitFor(() => r.ends[0]!.closed, 5_000, { message: 'relay side closed' });
  });

  it('a confirmed registration is not timed out later', async () => {
    const r = await relay();
    const w = connect(r);
    await registered(r, w);
    await w.clock.advance(60_000);
    expect(w.conn.state).toBe('registered');
    expect(w.closed()).toBeNull();
  });

  it('ends the connection when the relay stops answering heartbeats, and keeps it while they are answered', async () => {
    const r = await relay();
    const w = connect(r, { keepalive: { keepaliveIntervalMs: 40, keepaliveTimeoutMs: 300 } });
    const end = await registered(r, w);
    // Answered heartbeats: a round trip is measured and the connection stays.
    await waitFor(() => w.conn.rtt >= 0, 5_000, { message: 'a heartbeat answered' });
    expect(w.conn.state).toBe('registered');

    end.hang();
    await waitFor(() => w.closed(), 10_000, { message: 'closed after missed heartbeat' });
    expect(w.closed()).toMatchObject({ kind: 'network' });
    expect(w.closed()!.message).toMatch(/no ping answer within 300 ms/);
  });

  it('GoAway from the relay moves it to draining (announced once) while in-flight streams still get their answer', async () => {
    const r = await relay();
    const w = connect(r);
    const end = await registered(r, w);
    const inflight = end.openStream();
    inflight.write('request');
    await waitFor(() => w.streams.length === 1, 5_000, { message: 'in-flight stream' });

    end.goAway();
    await waitFor(() => w.conn.state === 'draining', 5_000, { message: 'draining' });
    expect(w.events).toEqual(['registered:registered', 'goaway:draining']);

    const answer = readAll(inflight);
    w.streams[0]!.end('answer');
    inflight.end();
    expect(await answer).toBe('answer');
    expect(w.closed()).toBeNull();

    // Leaving after GoAway: the drain handshake, then closed as drained.
    await w.conn.drain(30_000);
    expect(w.closed()).toEqual({ kind: 'local', message: 'drained' });
    expect(end.drainSeen).toBe(true);
  });

  it('drain waits for the relay’s echo: a stream the relay opened before echoing is still served', async () => {
    const r = await relay();
    r.script.echoDrain = false;
    const w = connect(r);
    const end = await registered(r, w);

    let drained = false;
    const draining = w.conn.drain(60_000).then(() => (drained = true));
    await waitFor(() => end.drainSeen, 5_000, { message: 'relay got drain' });
    expect(w.conn.state).toBe('draining');
    // The relay had a request on its way when the drain reached it: the stream precedes the echo.
    const late = end.openStream();
    late.write('request');
    end.send({ type: 'drain' });
    await waitFor(() => w.streams.length === 1, 5_000, { message: 'late stream served' });
    const answer = readAll(late);
    w.streams[0]!.end('answer');
    late.end();
    expect(await answer).toBe('answer');
    await draining;
    expect(drained).toBe(true);
    expect(w.closed()).toEqual({ kind: 'local', message: 'drained' });
  });

  it('drain then waits for in-flight streams before it closes', async () => {
    const r = await relay();
    const w = connect(r);
    const end = await registered(r, w);
    const inflight = end.openStream();
    inflight.write('request');
    await waitFor(() => w.streams.length === 1, 5_000, { message: 'in-flight stream' });

    let drained = false;
    void w.conn.drain(60_000).then(() => (drained = true));
    await waitFor(() => end.drainSeen, 5_000, { message: 'relay got drain' });
    await w.clock.advance(2_000); // past the echo wait, whether or not the echo arrived
    await waitFor(() => w.conn.streams === 1, 5_000, { message: 'stream still counted' });
    expect(drained).toBe(false);
    expect(w.conn.state).toBe('draining');

    const answer = readAll(inflight);
    w.streams[0]!.end('answer');
    inflight.end();
    expect(await answer).toBe('answer');
    await waitFor(() => drained, 5_000, { message: 'drain resolved after the last stream' });
    expect(w.closed()).toEqual({ kind: 'local', message: 'drained' });
  });

  it('drain gives up on a silent relay after 2 s and on a stuck stream after the grace period', async () => {
    const r = await relay();
    r.script.echoDrain = false;
    const w = connect(r);
    const end = await registered(r, w);
    end.openStream().write('request');
    await waitFor(() => w.streams.length === 1, 5_000, { message: 'in-flight stream' });

    let drained = false;
    void w.conn.drain(10_000).then(() => (drained = true));
    await waitFor(() => end.drainSeen, 5_000, { message: 'relay got drain' });
    // 2 s for the echo that never comes, then 10 s of grace for the stream that never ends.
    await w.clock.advance(11_999);
    expect(drained).toBe(false);
    expect(w.conn.state).toBe('draining');
    await w.clock.advance(1);
    await waitFor(() => drained, 5_000, { message: 'drain resolved at the end of the grace period' });
    expect(w.closed()).toEqual({ kind: 'local', message: 'drained' });
  });
});

describe('RelayConnection refusals', () => {
  const cases: Array<{ name: string; refuse: { status: number; code: string; message: string }; want: CloseReason }> = [
    {
      name: '401: refused (final)',
      refuse: { status: 401, code: 'token_invalid', message: 'signature does not verify' },
      want: { kind: 'refused', status: 401, code: 'token_invalid', message: 'signature does not verify' },
    },
    {
      name: '403 credential_revoked: revoked (final, exit 3)',
      refuse: { status: 403, code: 'credential_revoked', message: 'revoked by the operator' },
      want: { kind: 'revoked', code: 'credential_revoked', message: 'revoked by the operator' },
    },
    {
      name: '403 tunnel_deleted: revoked',
      refuse: { status: 403, code: 'tunnel_deleted', message: 'the tunnel was deleted' },
      want: { kind: 'revoked', code: 'tunnel_deleted', message: 'the tunnel was deleted' },
    },
    {
      name: '403 other: refused',
      refuse: { status: 403, code: 'zone_forbidden', message: 'not your zone' },
      want: { kind: 'refused', status: 403, code: 'zone_forbidden', message: 'not your zone' },
    },
    {
      name: '503: relay unavailable (retried)',
      refuse: { status: 503, code: 'relay_draining', message: 'relay is draining' },
      want: { kind: 'relay-unavailable', status: 503, code: 'relay_draining', message: 'relay is draining' },
    },
  ];
  for (const c of cases) {
    it(`an upgrade answered ${c.name}`, async () => {
      const r = await relay();
      r.script.refuse = c.refuse;
      const w = connect(r);
      await waitFor(() => w.closed(), 5_000, { message: 'closed' });
      expect(w.closed()).toEqual(c.want);
      expect(w.events).toEqual(['closed:closed']);
    });
  }

  it('a revocation the relay sends on the control stream while registered is final', async () => {
    const r = await relay();
    const w = connect(r);
    const end = await registered(r, w);
    end.send({ type: 'error', code: 'credential_revoked', message: 'revoked while running' });
    end.session.close();
    await waitFor(() => w.closed(), 5_000, { message: 'closed' });
    expect(w.closed()).toEqual({ kind: 'revoked', code: 'credential_revoked', message: 'revoked while running' });
  });

  it('any other relay error is a retryable network failure that names the code', async () => {
    const r = await relay();
    const w = connect(r);
    const end = await registered(r, w);
    end.send({ type: 'error', code: 'protocol', message: 'register sent twice' });
    end.session.close();
    await waitFor(() => w.closed(), 5_000, { message: 'closed' });
    expect(w.closed()).toEqual({ kind: 'network', message: 'relay error protocol: register sent twice' });
  });

  it('bytes on the control stream that are not a control message end the connection with the reason', async () => {
    const r = await relay();
    const w = connect(r);
    const end = await registered(r, w);
    end.sendRaw(Buffer.from([0, 0, 0, 4, 0x7b, 0x7d, 0x7b, 0x7d]));
    await waitFor(() => w.closed(), 5_000, { message: 'closed' });
    expect(w.closed()!.kind).toBe('network');
    expect(w.closed()!.message).toMatch(/^bad control message from relay: /);
    await waitFor(() => end.closed, 5_000, { message: 'relay side closed' });
  });

  it('a relay that is not listening is a network failure; abort while dialing closes once with the local reason', async () => {
    const r = await relay();
    await r.kill();
    const w = connect(r);
    await waitFor(() => w.closed(), 5_000, { message: 'closed' });
    expect(w.closed()!.kind).toBe('network');

    const r2 = await relay('relay-b');
    const w2 = connect(r2);
    w2.conn.abort({ kind: 'local', message: 'stopped' });
    expect(w2.closed()).toEqual({ kind: 'local', message: 'stopped' });
    w2.conn.abort({ kind: 'local', message: 'again' });
    expect(w2.events).toEqual(['closed:closed']);
  });
});
