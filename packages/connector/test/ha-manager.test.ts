// Over 500 lines: placement, retries, drain, refusal and rotation of HAManager share one scripted-relay and fake-clock setup at the top of this file.
// HAManager over real RelayConnections to scripted relays on 127.0.0.1 (real
// ws + yamux sessions), its back-offs, jitter and rebalancing on a fake clock:
// where each of the slots goes, how a dead or draining relay's slots move,
// how retries back off, when a relay that returns gets its share back, and
// that a refused credential stops everything.
import { afterEach, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { YamuxStream } from '@tunnel/protocol';
import { HAManager, type HAOptions } from '../src/ha/ha-manager.js';
import type { CloseReason } from '../src/ha/relay-connection.js';
import { waitFor } from '../../../test/harness/wait.js';
import { ScriptedRelay, type RelayEnd } from './scripted-relay.js';
import { fakeClock, type FakeClock } from './fake-clock.js';

const managers: HAManager[] = [];
const relays: ScriptedRelay[] = [];

afterEach(async () => {
  for (const m of managers.splice(0)) m.stop();
  await Promise.all(relays.splice(0).map((r) => r.close()));
});

async function startRelays(...ids: string[]): Promise<ScriptedRelay[]> {
  const rs = await Promise.all(ids.map((id) => ScriptedRelay.start(id)));
  relays.push(...rs);
  return rs;
}

interface Run {
  ha: HAManager;
  clock: FakeClock;
  /** `event index relay` for every connection event, in order (relay by id). */
  events: string[];
  fatal: CloseReason[];
  logs: Array<Record<string, unknown>>;
  streams: YamuxStream[];
  /** Dial events (as `index relay`) from position `from` of the event list on. */
  dials(from?: number): string[];
  /** Registered slots as `index@relay`, by index. */
  placement(): string[];
  /** Registered slots per relay id. */
  spread(): Record<string, number>;
}

function startHA(rs: ScriptedRelay[], extra: Partial<HAOptions> = {}): Run {
  const clock = fakeClock();
  // Any relay of the test, also one added later by setRelays.
  const name = { get: (url: string) => relays.find((r) => r.url === url)?.id };
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const streams: YamuxStream[] = [];
  const ha = new HAManager({
    relays: rs.map((r) => r.url),
    haConnections: 4,
    token: 'tok-1',
    connectorId: 'connector-1',
    version: 'test',
    log: pino({ level: 'info' }, sink),
    gracePeriodMs: 30_000,
    clock,
    onStream: (s) => {
      s.on('error', () => {});
      streams.push(s);
    },
    ...extra,
  });
  managers.push(ha);
  const events: string[] = [];
  const fatal: CloseReason[] = [];
  ha.on('connection', (e) => events.push(`${e.event} ${e.connIndex} ${name.get(e.relayUrl) ?? e.relayUrl}`));
  ha.on('fatal', (r) => fatal.push(r));
  const registered = () => ha.connections().filter((c) => c.state === 'registered');
  ha.start();
  return {
    ha,
    clock,
    events,
    fatal,
    logs,
    streams,
    dials: (from = 0) =>
      events
        .slice(from)
        .filter((e) => e.startsWith('dial '))
        .map((e) => e.slice(5)),
    placement: () =>
      registered()
        .sort((a, b) => a.index - b.index)
        .map((c) => `${c.index}@${name.get(c.relayUrl)}`),
    spread: () => {
      const out: Record<string, number> = {};
      for (const c of registered()) out[name.get(c.relayUrl)!] = (out[name.get(c.relayUrl)!] ?? 0) + 1;
      return out;
    },
  };
}

/** Three relays, two slots: slot 0 on A, slot 1 on B, C free; `mark` is where the events stood then. */
async function twoSlotsOnAB() {
  const [a, b, c] = await startRelays('A', 'B', 'C');
  const run = startHA([a!, b!, c!], { haConnections: 2 });
  await allReady(run, 2);
  expect(run.placement()).toEqual(['0@A', '1@B']);
  return { a: a!, b: b!, c: c!, run, mark: run.events.length };
}

const allReady = (run: Run, n = 4) => waitFor(() => run.ha.readyConnections === n, 5_000, { message: `${n} connections registered` });

describe('HAManager: where the slots go', () => {
  it('spreads four connections over two relays, two each, each slot presenting its index', async () => {
    const [a, b] = await startRelays('A', 'B');
    const run = startHA([a!, b!]);
    await allReady(run);
    expect(run.placement()).toEqual(['0@A', '1@B', '2@A', '3@B']);
    expect(a!.ends.map((e) => e.registered?.connIndex).sort()).toEqual([0, 2]);
    expect(b!.ends.map((e) => e.registered?.connIndex).sort()).toEqual([1, 3]);
    expect(b!.ends[0]!.headers['tunnel-conn-index']).toBe(String(b!.ends[0]!.registered!.connIndex));
  });

  it('moves a dead relay’s slots to the live one spread over 0–5 s while the tunnel still has live connections, never redialling the dead one', async () => {
    const [a, b] = await startRelays('A', 'B');
    const run = startHA([a!, b!]);
    await allReady(run);
    const mark = run.events.length;

    await a!.kill();
    await waitFor(() => run.events.filter((e) => e.startsWith('lost ')).length === 2, 5_000, { message: 'both A connections lost' });
    expect(run.dials(mark)).toEqual([]);
    // Two connections on B still serve. Jitter 0.5: replaced after 2.5 s, not before (and not
    // after 25 ms as when nothing is left); no rebalance tick (2 s) moves anything meanwhile.
    await run.clock.advance(2_499);
    expect(run.dials(mark)).toEqual([]);
    await run.clock.advance(1);
    expect(run.dials(mark).sort()).toEqual(['0 B', '2 B']);
    await allReady(run);
    expect(run.spread()).toEqual({ B: 4 });
    expect(run.fatal).toEqual([]);
  });

  it('replaces lost slots within 50 ms when the tunnel has no live connection left, also when they closed one at a time', async () => {
    const { a, b, run, mark } = await twoSlotsOnAB();

    // A dies first: slot 0 waits in the spread window (slot 1 on B still serves)...
    await a!.kill();
    await waitFor(() => run.events.includes('lost 0 A'), 5_000, { message: 'slot 0 lost' });
    await run.clock.advance(24);
    expect(run.dials(mark)).toEqual([]);
    // ...then B dies too: nothing is left, so both are replaced after 25 ms (jitter 0.5).
    await b!.kill();
    await waitFor(() => run.events.includes('lost 1 B'), 5_000, { message: 'slot 1 lost' });
    await run.clock.advance(24);
    expect(run.dials(mark)).toEqual([]);
    await run.clock.advance(1);
    // Where they go is the relay pick's business (neither A nor B failed a dial yet); when is this test's.
    expect(run.dials(mark).map((d) => d.split(' ')[0]).sort()).toEqual(['0', '1']);
    expect(run.fatal).toEqual([]);
  });

  it('never puts a moved slot on a relay another slot uses while a relay is free', async () => {
    const { a, b, c, run, mark } = await twoSlotsOnAB();

    await a!.kill();
    await waitFor(() => run.events.some((e) => e === 'lost 0 A'), 5_000, { message: 'slot 0 lost' });
    await run.clock.advance(2_500); // slot 1 still serves: the replacement is spread (jitter 0.5 of 5 s)
    await allReady(run, 2);
    expect(run.dials(mark)).toEqual(['0 C']);
    expect(run.placement()).toEqual(['0@C', '1@B']);
  });

  it('a relay that returns gets its share back, one move at a time, make-before-break', async () => {
    const [a, b] = await startRelays('A', 'B');
    const run = startHA([a!, b!]);
    await allReady(run);
    await a!.kill();
    await waitFor(() => run.events.filter((e) => e.startsWith('lost ')).length === 2, 5_000, { message: 'A connections lost' });
    await run.clock.advance(2_500); // replaced in the spread window: two on B still serve
    await allReady(run);
    expect(run.spread()).toEqual({ B: 4 });

    await a!.revive();
    a!.script.confirm = false; // hold each move at "registering" to look at it
    const bEnds = b!.live;
    expect(bEnds).toHaveLength(4);

    const mark = run.events.length;
    await run.clock.advance(2_000); // a rebalance tick
    expect(run.dials(mark)).toHaveLength(1);
    const moving = Number(run.dials(mark)[0]!.split(' ')[0]);
    expect(run.dials(mark)[0]).toBe(`${moving} A`);
    await waitFor(() => a!.live.find((e) => e.registered), 5_000, { message: 'move registering on A' });
    // The next tick moves nothing while one move is under way, and the slot still serves on B.
    await run.clock.advance(2_000);
    expect(run.dials(mark)).toHaveLength(1);
    expect(run.ha.readyConnections).toBe(4);
    const old = bEnds.find((e) => e.registered!.connIndex === moving)!;
    expect(old.closed).toBe(false);
    expect(old.drainSeen).toBe(false);

    // Confirmed: the slot is on A, and its B connection drains and leaves.
    a!.live.find((e) => e.registered)!.confirm();
    await waitFor(() => run.spread()['A'] === 1, 5_000, { message: 'slot registered on A' });
    expect(run.ha.readyConnections).toBe(4);
    await waitFor(() => old.closed, 5_000, { message: 'old B connection drained and closed' });
    expect(old.drainSeen).toBe(true);
    await waitFor(() => run.events.includes(`drained ${moving} B`), 5_000, { message: 'drained event' });

    // The next tick moves the second slot; then 2/2 and nothing more moves.
    const mark2 = run.events.length;
    await run.clock.advance(2_000);
    expect(run.dials(mark2)).toHaveLength(1);
    await waitFor(() => a!.live.filter((e) => e.registered).length === 2, 5_000, { message: 'second move registering' });
    a!.live.filter((e) => e.registered).at(-1)!.confirm();
    await waitFor(() => run.spread()['A'] === 2 && run.spread()['B'] === 2, 5_000, { message: '2/2' });
    const mark3 = run.events.length;
    await run.clock.advance(10_000);
    expect(run.dials(mark3)).toEqual([]);
  });

  it('a relay dropped from the fleet’s list loses its connections to the listed relays', async () => {
    const [a, b, c] = await startRelays('A', 'B', 'C');
    const run = startHA([a!, b!]);
    await allReady(run);
    run.ha.setRelays([b!.url, c!.url]);
    // A few rebalance ticks, each waiting for the move it started to register.
    const registrations = () => run.events.filter((e) => e.startsWith('registered ')).length;
    for (let i = 0; i < 6 && (run.spread()['A'] ?? 0) > 0; i++) {
      const dials = run.dials().length;
      const regs = registrations();
      await run.clock.advance(2_000);
      if (run.dials().length > dials) await waitFor(() => registrations() > regs, 5_000, { message: 'move registered' });
    }
    await waitFor(() => a!.live.length === 0, 5_000, { message: 'A has no connection left' });
    expect(run.spread()['A']).toBeUndefined();
    expect(run.ha.readyConnections).toBe(4);
    expect(run.spread()).toEqual({ B: 2, C: 2 });
    expect(run.logs.filter((l) => l['reason'] === 'relay no longer listed').map((l) => l['connIndex'])).toEqual([0, 2]);
  });

  it('connections on a relay no longer listed stay while the listed relay fails, and its tries get further apart', async () => {
    const [a, b, c] = await startRelays('A', 'B', 'C');
    await c!.kill();
    const run = startHA([a!, b!]);
    await allReady(run);
    const triesOnC: number[] = [];
    run.ha.on('connection', (e) => {
      if (e.event === 'dial' && e.relayUrl === c!.url) triesOnC.push(run.clock.now());
    });
    run.ha.setRelays([c!.url]);
    for (let i = 0; i < 30; i++) {
      await run.clock.advance(2_000);
      await waitFor(() => run.ha.connections().length === 4, 5_000, { message: 'the move to C failed' });
    }
    expect(run.ha.readyConnections).toBe(4);
    const gaps = triesOnC.slice(1).map((t, i) => t - triesOnC[i]!);
    expect(gaps.length).toBeGreaterThan(3);
    expect(gaps.at(-1)).toBeGreaterThanOrEqual(10_000);
  });
});

describe('HAManager: retries', () => {
  it('backs off a failing slot exponentially with jitter, capped at 15 s, and starts over once it registered', async () => {
    const [a] = await startRelays('A');
    await a!.kill();
    const run = startHA([a!], { haConnections: 1 });
    run.clock.jitter = 0; // the low end: half the base delay
    const backoffs = () => run.events.filter((e) => e.startsWith('backoff ')).length;
    const expected = [125, 250, 500, 1_000, 2_000, 4_000, 7_500, 7_500];
    for (const [k, delay] of expected.entries()) {
      await waitFor(() => backoffs() === k + 1, 5_000, { message: `failure ${k + 1}` });
      expect(run.ha.relayHealth()[0]!.failures).toBe(k + 1);
      expect(run.dials()).toHaveLength(k + 1);
      await run.clock.advance(delay - 1);
      expect(run.dials(), `retry ${k + 1} before ${delay} ms`).toHaveLength(k + 1);
      await run.clock.advance(1);
      expect(run.dials(), `retry ${k + 1} at ${delay} ms`).toHaveLength(k + 2);
    }
    expect(run.fatal).toEqual([]);

    // The relay returns: the pending retry registers and the slot's back-off starts over.
    await waitFor(() => backoffs() === expected.length + 1, 5_000, { message: 'last failure' });
    await a!.revive();
    await run.clock.advance(7_500);
    await allReady(run, 1);
    expect(run.ha.relayHealth()[0]!.failures).toBe(0);
    await a!.kill();
    await waitFor(() => run.events.includes('lost 0 A'), 5_000, { message: 'lost' });
    await run.clock.advance(0); // a lost connection is replaced after 0–50 ms of jitter: 0 here
    await waitFor(() => backoffs() === expected.length + 2, 5_000, { message: 'the first retry failed' });
    const dialsNow = run.dials().length;
    await run.clock.advance(124);
    expect(run.dials()).toHaveLength(dialsNow);
    await run.clock.advance(1);
    expect(run.dials()).toHaveLength(dialsNow + 1);
  });

  it('jitter spreads a retry over [base/2, base)', async () => {
    const [a] = await startRelays('A');
    await a!.kill();
    const run = startHA([a!], { haConnections: 1 });
    run.clock.jitter = 0.999;
    const backoffs = () => run.events.filter((e) => e.startsWith('backoff ')).length;
    for (const [k, delay] of [249, 499].entries()) {
      await waitFor(() => backoffs() === k + 1, 5_000, { message: `failure ${k + 1}` });
      await run.clock.advance(delay - 1);
      expect(run.dials()).toHaveLength(k + 1);
      await run.clock.advance(1);
      expect(run.dials()).toHaveLength(k + 2);
    }
  });

  it('rebalancing onto a relay that keeps failing backs off too: its tries get further apart', async () => {
    const [a, b] = await startRelays('A', 'B');
    await b!.kill();
    const run = startHA([a!, b!], { haConnections: 2 });
    const triesOnB: number[] = [];
    run.ha.on('connection', (e) => {
      if (e.event === 'dial' && e.relayUrl === b!.url) triesOnB.push(run.clock.now());
    });
    await waitFor(() => run.events.includes('backoff 1 B'), 5_000, { message: 'slot 1 failed on B' });
    await run.clock.advance(250);
    await allReady(run, 2);
    // 60 s of rebalance ticks, each move to B allowed to fail before the next tick.
    for (let i = 0; i < 30; i++) {
      await run.clock.advance(2_000);
      await waitFor(() => run.ha.connections().length === 2, 5_000, { message: 'the move to B failed' });
    }
    const gaps = triesOnB.slice(1).map((t, i) => t - triesOnB[i]!);
    expect(gaps.length).toBeGreaterThan(3);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]).toBeGreaterThanOrEqual(gaps[i - 1]!);
    expect(gaps.at(-1)).toBeGreaterThanOrEqual(10_000);
    expect(run.spread()).toEqual({ A: 2 });
  });

  it('a relay that answers 503 is retried with back-off, not fatal, and skipped while it backs off', async () => {
    const [a, b] = await startRelays('A', 'B');
    a!.script.refuse = { status: 503, code: 'relay_draining', message: 'relay is draining' };
    const run = startHA([a!, b!], { haConnections: 2 });
    await waitFor(() => run.events.includes('backoff 0 A'), 5_000, { message: 'slot 0 backing off' });
    await allReady(run, 1);
    // The retry goes to B (A is avoided while it backs off): two slots on B, since no other relay is up.
    await run.clock.advance(250);
    await allReady(run, 2);
    expect(run.placement()).toEqual(['0@B', '1@B']);
    expect(run.fatal).toEqual([]);
    expect(run.ha.relayHealth().find((r) => r.url === a!.url)).toMatchObject({ failures: 1, lastError: 'relay is draining' });
  });

  it('a 503 with Retry-After is never redialled sooner than it asks (plus up to 1 s of jitter), though the back-off alone would be 125 ms', async () => {
    const [a] = await startRelays('A');
    a!.script.refuse = { status: 503, code: 'relay_busy', message: 'too many registrations in progress', retryAfter: '3' };
    const run = startHA([a!], { haConnections: 1 });
    run.clock.jitter = 0.5;
    await waitFor(() => run.events.includes('backoff 0 A'), 5_000, { message: 'slot 0 refused' });
    expect(run.dials()).toHaveLength(1);
    // 3 s + 0.5 × 1 s of jitter.
    await run.clock.advance(3_499);
    expect(run.dials()).toHaveLength(1);
    a!.script.refuse = null;
    await run.clock.advance(1);
    expect(run.dials()).toHaveLength(2);
    await allReady(run, 1);
    expect(run.fatal).toEqual([]);
  });

  it('a Retry-After that is not a number of seconds is ignored, and a huge one is capped at 5 minutes', async () => {
    const [a, b] = await startRelays('A', 'B');
    a!.script.refuse = { status: 503, code: 'relay_busy', message: 'busy', retryAfter: 'Wed, 21 Oct 2015 07:28:00 GMT' };
    b!.script.refuse = { status: 503, code: 'relay_busy', message: 'busy', retryAfter: '999999999' };
    const run = startHA([a!, b!], { haConnections: 2 });
    run.clock.jitter = 0;
    await waitFor(() => run.events.includes('backoff 0 A') && run.events.includes('backoff 1 B'), 5_000, { message: 'both refused' });
    // Slot 0 (A, a date): the plain back-off of 125 ms. Slot 1 (B): 300 s, not 31 years.
    await run.clock.advance(125);
    expect(run.dials().filter((d) => d.startsWith('0 '))).toHaveLength(2);
    expect(run.dials().filter((d) => d.startsWith('1 '))).toHaveLength(1);
    await run.clock.advance(300_000 - 125 - 1);
    expect(run.dials().filter((d) => d.startsWith('1 '))).toHaveLength(1);
    await run.clock.advance(1);
    expect(run.dials().filter((d) => d.startsWith('1 '))).toHaveLength(2);
  });
});

describe('HAManager: drain and GoAway', () => {
  it('GoAway moves the slots off the draining relay at once; the old connections finish their in-flight streams; the relay is avoided for 5 s', async () => {
    const [a, b] = await startRelays('A', 'B');
    const run = startHA([a!, b!]);
    await allReady(run);
    const [busy, idle] = a!.live;
    const inflight = busy!.openStream();
    inflight.write('request');
    await waitFor(() => run.streams.length === 1, 5_000, { message: 'in-flight stream on A' });
    const mark = run.events.length;

    busy!.goAway();
    idle!.goAway();
    await allReady(run);
    await waitFor(() => run.spread()['B'] === 4, 5_000, { message: 'all on B' });
    expect(run.dials(mark).map((d) => d.split(' ')[1])).toEqual(['B', 'B']);
    // The idle one drained and left; the busy one waits for its stream.
    await waitFor(() => idle!.closed, 5_000, { message: 'idle A connection drained' });
    expect(idle!.drainSeen).toBe(true);
    expect(busy!.closed).toBe(false);
    const answer = new Promise<string>((resolve) => {
      const parts: Buffer[] = [];
      inflight.on('data', (c: Buffer) => parts.push(c));
      inflight.on('end', () => resolve(Buffer.concat(parts).toString()));
    });
    run.streams[0]!.end('answer');
    inflight.end();
    expect(await answer).toBe('answer');
    await waitFor(() => busy!.closed, 5_000, { message: 'busy A connection drained after its stream' });

    // A is avoided for 5 s: the rebalance ticks at 2 s and 4 s move nothing; the one after does.
    const mark2 = run.events.length;
    await run.clock.advance(4_000);
    expect(run.dials(mark2)).toEqual([]);
    await run.clock.advance(2_000);
    expect(run.dials(mark2).map((d) => d.split(' ')[1])).toEqual(['A']);
  });

  it('drain (SIGTERM) drains every connection and dials nothing more', async () => {
    const [a, b] = await startRelays('A', 'B');
    const run = startHA([a!, b!]);
    await allReady(run);
    const mark = run.events.length;
    await run.ha.drain();
    expect([...a!.ends, ...b!.ends].map((e) => e.drainSeen)).toEqual([true, true, true, true]);
    await waitFor(() => a!.live.length === 0 && b!.live.length === 0, 5_000, { message: 'all closed' });
    await run.clock.advance(60_000);
    expect(run.dials(mark)).toEqual([]);
    expect(run.events.slice(mark).filter((e) => e.startsWith('drained '))).toHaveLength(4);
  });
});

describe('HAManager: a refused credential', () => {
  it('stops every connection and reports the reason once; nothing is retried', async () => {
    const [a, b] = await startRelays('A', 'B');
    a!.script.refuse = { status: 401, code: 'token_invalid', message: 'signature does not verify' };
    b!.script.refuse = a!.script.refuse;
    const run = startHA([a!, b!]);
    await waitFor(() => run.fatal.length > 0, 5_000, { message: 'fatal' });
    expect(run.fatal).toEqual([{ kind: 'refused', status: 401, code: 'token_invalid', message: 'signature does not verify' }]);
    const upgrades = a!.upgrades + b!.upgrades;
    await run.clock.advance(120_000);
    expect(a!.upgrades + b!.upgrades).toBe(upgrades);
    expect(run.fatal).toHaveLength(1);
    expect(run.logs.some((l) => l['event'] === 'refused' && String(l['msg']).includes('signature does not verify'))).toBe(true);
  });

  it('a revocation on one relay ends the connections on the others too', async () => {
    const [a, b] = await startRelays('A', 'B');
    const run = startHA([a!, b!]);
    await allReady(run);
    const end = b!.live[0]!;
    end.send({ type: 'error', code: 'credential_revoked', message: 'revoked by the operator' });
    end.session.close();
    await waitFor(() => run.fatal.length > 0, 5_000, { message: 'fatal' });
    expect(run.fatal).toEqual([{ kind: 'revoked', code: 'credential_revoked', message: 'revoked by the operator' }]);
    await waitFor(() => a!.live.length === 0 && b!.live.length === 0, 5_000, { message: 'every connection closed' });
    const upgrades = a!.upgrades + b!.upgrades;
    await run.clock.advance(120_000);
    expect(a!.upgrades + b!.upgrades).toBe(upgrades);
  });
});

describe('HAManager: one relay up', () => {
  it('warns once that every connection is on one relay when the other cannot be reached', async () => {
    const [a, b] = await startRelays('A', 'B');
    await b!.kill();
    const run = startHA([a!, b!]);
    const warnings = () => run.logs.filter((l) => l['event'] === 'single-relay');
    // Slots whose dial to B failed retry on A (B is avoided while it backs off).
    for (let i = 0; i < 10 && run.ha.readyConnections < 4; i++) {
      await run.clock.advance(250);
      await waitFor(() => run.ha.connections().every((c) => c.state === 'registered') || run.ha.connections().length === 0, 5_000, {
        message: 'dials settled',
      });
    }
    await allReady(run);
    expect(run.spread()).toEqual({ A: 4 });
    await run.clock.advance(2_000);
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]!['msg']).toBe('only one of 2 relays is reachable: all connections are on it');
    await run.clock.advance(20_000);
    expect(warnings()).toHaveLength(1);
  });
});

describe('HAManager: credential rotation', () => {
  it('replaces every connection with one presenting the new credential, one slot at a time, make-before-break', async () => {
    const [a, b] = await startRelays('A', 'B');
    a!.script.confirm = b!.script.confirm = false; // hold each replacement at "registering"
    const run = startHA([a!, b!]);
    await waitFor(() => a!.live.length + b!.live.length === 4 && [...a!.live, ...b!.live].every((e) => e.registered), 5_000, { message: 'four registering' });
    for (const e of [...a!.live, ...b!.live]) e.confirm();
    await allReady(run);
    const old = [...a!.live, ...b!.live];

    run.ha.rotateToken('tok-2');
    const confirmed = new Set<RelayEnd>();
    const fresh = () => [...a!.ends, ...b!.ends].filter((e) => e.headers.authorization === 'Bearer tok-2');
    for (let k = 1; k <= 4; k++) {
      await waitFor(() => fresh().length === k && fresh().every((e) => e.registered), 5_000, { message: `replacement ${k} registering` });
      // One at a time: the next is not dialled before this one registers, and every slot still serves.
      expect(run.ha.readyConnections).toBe(4);
      const replacement = fresh().find((e) => !confirmed.has(e))!;
      confirmed.add(replacement);
      const slotIndex = replacement.registered!.connIndex;
      expect(old.find((e) => e.registered!.connIndex === slotIndex)!.closed).toBe(false);
      replacement.confirm();
      await waitFor(() => old.find((e) => e.registered!.connIndex === slotIndex)!.closed, 5_000, { message: `old connection of slot ${slotIndex} drained` });
    }
    await waitFor(() => run.logs.some((l) => l['event'] === 'credential-rotated'), 5_000, { message: 'rotation done' });
    expect([...a!.live, ...b!.live].map((e) => e.headers.authorization)).toEqual(['Bearer tok-2', 'Bearer tok-2', 'Bearer tok-2', 'Bearer tok-2']);
    expect(old.every((e) => e.drainSeen)).toBe(true);
    expect(run.ha.readyConnections).toBe(4);
  });

  it('a new credential the relays refuse is dropped; the connections on the current one stay, nothing is fatal', async () => {
    const [a, b] = await startRelays('A', 'B');
    for (const r of [a!, b!]) {
      r.script.refuse = { status: 401, code: 'token_invalid', message: 'signature does not verify' };
      r.script.refuseOnly = 'tok-bad';
    }
    const run = startHA([a!, b!]);
    await allReady(run);
    const old = [...a!.live, ...b!.live];
    run.ha.rotateToken('tok-bad');
    await waitFor(() => run.logs.some((l) => l['event'] === 'credential-rotation-refused'), 5_000, { message: 'rotation refused' });
    await run.clock.advance(60_000);
    expect(run.fatal).toEqual([]);
    expect(run.ha.readyConnections).toBe(4);
    expect(old.every((e) => !e.closed)).toBe(true);
    // Later connections present the credential that works.
    const mark = a!.ends.length + b!.ends.length;
    const lost = run.events.filter((e) => e.startsWith('lost ')).length;
    old[0]!.session.destroy();
    await waitFor(() => run.events.filter((e) => e.startsWith('lost ')).length > lost, 5_000, { message: 'connection lost' });
    await run.clock.advance(2_500); // three still serve: replaced in the spread window (jitter 0.5 of 5 s)
    await allReady(run);
    expect([...a!.ends, ...b!.ends].slice(mark).map((e) => e.headers.authorization)).toEqual(['Bearer tok-1']);
  });
});
