import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type WebSocket from 'ws';
import { GoAwayCode, MAX_CONN_INDEX } from '@tunnel/protocol';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { createTunnel, startRelay, type Proc, type RelayProc } from '../harness/procs.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';
import { connectRaw, evilConnector, frames, pingFrame, registerSession, synFrame } from '../harness/evil-connector.js';
import { limitHits, metricsUrl, rssMiB, scrape } from '../harness/limit-metrics.js';

// Ceilings on the connector side of a relay, hit on purpose by a connector
// written by hand: sessions per tunnel token and per connector id (a 429
// with a JSON reason before the upgrade), ping answers per session, a
// connector that never reads (reading pauses, then the session is closed),
// and a SYN flood (protocol-error GoAway). Each time: the exact counter
// move in /metrics, and the relay still serving the stock connector.

describe('security: connector-side ceilings', () => {
  let fleet: Fleet;
  let origin: Origin;
  let good: Proc;
  let evilToken: string;
  let metrics: string;
  const open: WebSocket[] = [];

  beforeAll(async () => {
    origin = await startOrigin((q, s) => s.end(`ok ${q.url}`));
    fleet = await startFleet({
      relays: 1,
      relayArgs: ['--metrics', '127.0.0.1:0', '--max-sessions-per-token', '6', '--max-sessions-per-connector', '4', '--session-ping-rate', '5'],
    });
    metrics = await metricsUrl(fleet.relays[0]!);
    good = await fleet.connector({ url: origin.url, ha: 4 });
    evilToken = await createTunnel({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, name: 'evil', hostnames: ['evil.test'] });
  });
  afterAll(async () => {
    for (const ws of open) ws.terminate();
    await fleet?.close();
    await origin?.close();
  });

  const relay = () => fleet.relays[0]!;
  const stillServing = async (r: RelayProc = relay()) => {
    expect(r.proc.running).toBe(true);
    expect((await req(`${r.publicUrl}/alive`, { host: fleet.hostname })).text).toBe('ok /alive');
  };

  it('sessions per connector id and per tunnel token: a 429 with a JSON reason before the upgrade, freed when one closes', async () => {
    const before = await limitHits(metrics);
    // Four connections of connector "a" are fine, the fifth is one too many.
    for (let i = 0; i < 4; i++) {
      const up = await connectRaw(relay().connectUrl, evilToken, 'a', i);
      expect(up.ok).toBe(true);
      if (up.ok) open.push(up.ws);
    }
    const fifth = await connectRaw(relay().connectUrl, evilToken, 'a', 4);
    expect(fifth.ok).toBe(false);
    if (fifth.ok) return;
    expect(fifth.status).toBe(429);
    const why = JSON.parse(fifth.body) as { error: { code: string; message: string } };
    expect(why.error.code).toBe('too_many_sessions');
    expect(why.error.message).toMatch(/connector a already has 4 connections/);
    // Two more under another connector id reach the token's 6; the next is refused for the token.
    for (let i = 0; i < 2; i++) {
      const up = await connectRaw(relay().connectUrl, evilToken, `b${i}`, 0);
      expect(up.ok).toBe(true);
      if (up.ok) open.push(up.ws);
    }
    const seventh = await connectRaw(relay().connectUrl, evilToken, 'c', 0);
    expect(seventh.ok).toBe(false);
    if (seventh.ok) return;
    expect(seventh.status).toBe(429);
    expect(JSON.parse(seventh.body).error.message).toMatch(/this tunnel token already has 6 connections/);
    const after = await limitHits(metrics);
    expect(after.sessions_per_connector! - before.sessions_per_connector!).toBe(1);
    expect(after.sessions_per_token! - before.sessions_per_token!).toBe(1);
    // The stock connector (another token) is untouched.
    await stillServing();
    // Closing one frees its slot.
    const gone = open.pop()!;
    const closed = new Promise((r) => gone.once('close', r));
    gone.close();
    await closed;
    const again = await waitFor(async () => {
      const up = await connectRaw(relay().connectUrl, evilToken, 'c', 0);
      return up.ok ? up : null;
    }, 5_000, { message: 'a slot freed' });
    open.push(again.ws);
    for (const ws of open.splice(0)) ws.terminate();
  });

  it('a ping flood gets 5 answers (the per-session rate), the rest are dropped and counted', async () => {
    await waitFor(async () => (await scrape(metrics, 'tunnel_relay_connector_connections')).get('relay=relay-0,state=active') === 4, 5_000, { message: 'evil sessions gone' });
    const before = await limitHits(metrics);
    const evil = await evilConnector(relay().connectUrl, evilToken, 'pinger');
    // 1,000 pings in one message: parsed in one turn, so the bucket (5/s) does not refill meanwhile.
    evil.ws.send(frames(1000, pingFrame));
    await waitFor(async () => (await limitHits(metrics)).session_ping_rate! - before.session_ping_rate! === 995, 5_000, { message: '995 pings dropped' });
    await waitFor(() => evil.frames.pingAcks === 5, 5_000, { message: '5 ping answers' });
    expect(evil.frames.goAway).toBeNull();
    await stillServing();
    evil.ws.terminate();
  });

  it('a SYN flood from a connector ends its session with a protocol-error GoAway; memory stays bounded', async () => {
    const before = await limitHits(metrics);
    const rss0 = rssMiB(relay().proc.pid);
    const evil = await evilConnector(relay().connectUrl, evilToken, 'flooder');
    let closed = false;
    evil.ws.once('close', () => (closed = true));
    // 300,000 SYNs (3.6 MB) in one message.
    evil.ws.send(frames(300_000, synFrame));
    await waitFor(() => closed, 10_000, { message: 'session closed by the relay' });
    expect(evil.frames.goAway).toBe(GoAwayCode.ProtocolError);
    const after = await limitHits(metrics);
    expect(after.connector_streams! - before.connector_streams!).toBe(1);
    // A sanity bound only (the figures are in the abuse benchmark).
    expect(rssMiB(relay().proc.pid) - rss0).toBeLessThan(150);
    await stillServing();
  });

  it('a connector that floods pings and never reads: the relay stops reading it, then closes it', async () => {
    // A relay of its own: no ping-rate limit, a small queue cap and a short stall timeout.
    const r = await startRelay({
      dir: fleet.dir,
      store: fleet.store,
      keys: fleet.keys,
      id: 'relay-stall',
      extraArgs: ['--metrics', '127.0.0.1:0', '--session-ping-rate', '0', '--session-max-queued', String(1024 * 1024), '--session-stall-timeout', '1500ms'],
    });
    const m = await metricsUrl(r);
    const before = await limitHits(m);
    const rss0 = rssMiB(r.proc.pid);
    const evil = await evilConnector(r.connectUrl, evilToken, 'sleeper');
    evil.ws.pause(); // never read again
    // Send pings (bounded: 400 messages of 100k pings = 480 MB at most) until the relay stops taking them.
    const batch = frames(100_000, pingFrame);
    let sent = 0;
    await waitFor(
      () => {
        if (evil.ws.bufferedAmount > 16 * 1024 * 1024 || sent >= 400) return true;
        evil.ws.send(batch);
        sent++;
        return false;
      },
      20_000,
      { intervalMs: 1, message: 'the relay to push back' },
    );
    expect(evil.ws.bufferedAmount).toBeGreaterThan(16 * 1024 * 1024);
    const paused = await limitHits(m);
    expect(paused.session_outbound_queue! - before.session_outbound_queue!).toBeGreaterThanOrEqual(1);
    expect(rssMiB(r.proc.pid) - rss0).toBeLessThan(200);
    // Still over the cap after 1.5 s: the session is closed.
    await waitFor(async () => (await limitHits(m)).session_outbound_stall! - before.session_outbound_stall! === 1, 10_000, { message: 'stalled session closed' });
    const closed = await r.proc.waitForLog((l) => l.event === 'closed' && l.connectorId === 'sleeper', 5_000, 'the sleeper closed');
    expect(closed.reason).toMatch(/peer read nothing for 1500 ms/);
    evil.ws.terminate();
    expect(r.proc.running).toBe(true);
    // It still serves (forwarding to the relay that holds the stock connector).
    await waitFor(async () => (await req(`${r.publicUrl}/alive`, { host: fleet.hostname })).text === 'ok /alive', 10_000, { message: 'stall relay serving' });
    await r.proc.stop();
  });

  it('registrations in progress: past the ceiling a 503 relay_busy with a jittered Retry-After, counted; freed when one registers or leaves', async () => {
    const r = await startRelay({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, id: 'relay-busy', extraArgs: ['--metrics', '127.0.0.1:0', '--max-pending-registrations', '2'] });
    const m = await metricsUrl(r);
    const before = await limitHits(m);
    // Two upgraded sessions that never send `register` hold both places.
    const held: WebSocket[] = [];
    for (let i = 0; i < 2; i++) {
      const up = await connectRaw(r.connectUrl, evilToken, `slow${i}`, 0);
      expect(up.ok).toBe(true);
      if (up.ok) held.push(up.ws);
    }
    const pending = async () => [...(await scrape(m, 'tunnel_relay_pending_registrations')).values()][0];
    expect(await pending()).toBe(2);
    const third = await connectRaw(r.connectUrl, evilToken, 'late', 0);
    expect(third.ok).toBe(false);
    if (third.ok) return;
    expect(third.status).toBe(503);
    expect(JSON.parse(third.body).error.code).toBe('relay_busy');
    expect(Number(third.retryAfter)).toBeGreaterThanOrEqual(1);
    expect(Number(third.retryAfter)).toBeLessThanOrEqual(4);
    expect((await limitHits(m)).pending_registrations! - before.pending_registrations!).toBe(1);
    // One registers (no longer in progress), the other leaves: both places are free again.
    await registerSession(held[0]!, 'slow0', 0);
    const gone = new Promise((res) => held[1]!.once('close', res));
    held[1]!.close();
    await gone;
    await waitFor(async () => (await pending()) === 0, 5_000, { message: 'places freed' });
    const later = await connectRaw(r.connectUrl, evilToken, 'late', 0);
    expect(later.ok).toBe(true);
    if (later.ok) later.ws.terminate();
    held[0]!.terminate();
    await r.proc.stop();
  });

  it('Tunnel-Conn-Index: 0..MAX_CONN_INDEX is taken, one more is a 400 naming the range', async () => {
    const over = await connectRaw(relay().connectUrl, fleet.token, 'idx', MAX_CONN_INDEX + 1);
    expect(over.ok).toBe(false);
    if (over.ok) return;
    expect(over.status).toBe(400);
    expect(JSON.parse(over.body).error).toEqual({ code: 'bad_headers', message: `Tunnel-Connector-Id and Tunnel-Conn-Index (0..${MAX_CONN_INDEX}) are required` });
    const top = await connectRaw(relay().connectUrl, fleet.token, 'idx', MAX_CONN_INDEX);
    expect(top.ok).toBe(true);
    if (top.ok) top.ws.terminate();
    await stillServing();
  });
});
