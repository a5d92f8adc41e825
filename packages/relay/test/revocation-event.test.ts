// A revocation recorded in the store ends a RUNNING connection at once, through
// the store's `revoked` event, not through the relay's heartbeat sweep (which
// also ends revoked connections, every heartbeat). The relay here runs with a
// 10-minute heartbeat, so within the test only the event path can drop the
// connection; the end-to-end test (test/routes-and-revocation.test.ts) runs
// the stock 2 s sweep, which would hide an event path that matched nothing.
//
// The revocation is written by a second store on the same directory, as
// `tunnel-relay revoke` does from its own process; the relay learns of it
// through its store's watcher. Only the revoked credential's connection ends:
// another credential of the same tunnel, and a rotation's revocation that
// takes effect later, keep theirs.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKeyPair } from '@tunnel/protocol';
import { Relay } from '../src/relay.js';
import { signTunnelToken } from '../src/control/provisioning.js';
import { openStore } from '../src/store/open.js';
import type { Store, StoreEvent, Tunnel } from '../src/store/types.js';
import { connectRaw, registerSession } from '../../../test/harness/evil-connector.js';
import { waitFor } from '../../../test/harness/wait.js';

/** Longer than the test: the heartbeat sweep never runs. */
const HEARTBEAT_MS = 600_000;
/** The README's bound for a running connector to be dropped after `revoke`. */
const BOUND_MS = 5_000;

describe('relay: a revocation event drops the running connection (heartbeat sweep out of reach)', () => {
  let dir: string;
  let relayStore: Store;
  let cliStore: Store;
  let relay: Relay;
  let tunnel: Tunnel;
  let connectUrl: string;
  const keys = { ...generateSigningKeyPair(), createdAt: new Date().toISOString() };
  const logs: Array<Record<string, unknown>> = [];
  const events: StoreEvent[] = [];
  const sockets: WebSocket[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'tunnel-revocation-event-'));
    relayStore = await openStore(`file:${dir}`, { watch: true });
    cliStore = await openStore(`file:${dir}`, { watch: false });
    const acct = await cliStore.createAccount('dora');
    tunnel = await cliStore.createTunnel(acct.id, 'live');
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    relay = new Relay(
      { id: 'relay-ev', region: 'test', listen: { connect: { host: '127.0.0.1', port: 0 } }, drainTimeoutMs: 1_000, heartbeatMs: HEARTBEAT_MS },
      { store: relayStore, keys, log: pino({ level: 'info' }, sink) },
    );
    const ports = await relay.start();
    connectUrl = `ws://127.0.0.1:${ports.connect}`;
    // Subscribed after the relay: when this sees an event, the relay has seen it.
    relayStore.subscribe((e) => events.push(e));
  });
  afterAll(async () => {
    for (const ws of sockets) ws.terminate();
    await relay?.stop();
    await relayStore?.close();
    await cliStore?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A registered connection on its own credential; resolves with the credential's id and the socket's close. */
  async function connect(connectorId: string): Promise<{ tokenId: string; closed: Promise<number>; ws: WebSocket }> {
    const token = signTunnelToken(keys, tunnel, [connectUrl], undefined, 3600);
    const up = await connectRaw(connectUrl, token, connectorId, 0);
    if (!up.ok) throw new Error(`refused: ${up.status} ${up.body}`);
    sockets.push(up.ws);
    up.ws.on('error', () => {});
    const closed = new Promise<number>((resolve) => up.ws.once('close', (code) => resolve(code)));
    await registerSession(up.ws, connectorId, 0, { keepaliveIntervalMs: 0 });
    const conn = await waitFor(() => relay.connections.list().find((c) => c.id.connectorId === connectorId), 5_000, { message: `${connectorId} registered` });
    const tokenId = conn.id.tokenId;
    return { tokenId, closed, ws: up.ws };
  }
  const live = (tokenId: string) => relay.connections.list().some((c) => c.id.tokenId === tokenId);

  it('revoking a running connection’s credential ends that connection within 5 s, and only that one', async () => {
    const revoked = await connect('revoked');
    const other = await connect('other');
    const rotated = await connect('rotated');

    // A rotation: revoked, effective in a minute. Seen by the relay before
    // the immediate revocation below is written, and must drop nothing.
    await cliStore.revoke(rotated.tokenId, Date.now() + 3_600_000, Date.now() + 60_000);
    await waitFor(() => events.some((e) => e.type === 'revoked' && e.tokenId === rotated.tokenId), BOUND_MS, { message: 'rotation seen by the relay' });

    const t0 = Date.now();
    await cliStore.revoke(revoked.tokenId, Date.now() + 3_600_000);
    const outcome = await Promise.race([
      revoked.closed.then(() => 'closed' as const),
      new Promise<'open'>((resolve) => setTimeout(() => resolve('open'), BOUND_MS).unref()),
    ]);
    expect(outcome, 'the revoked credential’s connection is still open 5 s after the revocation (the event path matched nothing)').toBe('closed');
    expect(Date.now() - t0).toBeLessThan(BOUND_MS);
    expect(live(revoked.tokenId)).toBe(false);
    expect(logs.some((l) => l.event === 'closed' && String(l.reason).startsWith('credential_revoked'))).toBe(true);

    // The event for `revoked` was handled after the rotation's: both untouched.
    expect(live(other.tokenId)).toBe(true);
    expect(live(rotated.tokenId)).toBe(true);
    expect(other.ws.readyState).toBe(other.ws.OPEN);
    expect(rotated.ws.readyState).toBe(rotated.ws.OPEN);
  });
});
