import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { req } from '../harness/http.js';
import { connectRaw } from '../harness/evil-connector.js';
import { limitHits, metricsUrl } from '../harness/limit-metrics.js';
import { waitFor } from '../harness/wait.js';

// A connector that upgrades and never registers holds a session slot: the
// relay closes it after --register-timeout (configurable, was a fixed 10 s),
// logs why, counts it, and keeps serving the stock connector.

describe('security: registration timeout', () => {
  let fleet: Fleet;
  let origin: Origin;
  let metrics: string;

  beforeAll(async () => {
    origin = await startOrigin((q, s) => s.end(`ok ${q.url}`));
    fleet = await startFleet({ relays: 1, relayArgs: ['--metrics', '127.0.0.1:0', '--register-timeout', '500ms'] });
    metrics = await metricsUrl(fleet.relays[0]!);
    await fleet.connector({ url: origin.url, ha: 1 });
  }, 60_000);
  afterAll(async () => {
    await fleet?.close();
    await origin?.close();
  });

  it('a session with no register message is closed after --register-timeout, logged and counted', async () => {
    const before = (await limitHits(metrics)).register_timeout ?? 0;
    const up = await connectRaw(fleet.relays[0]!.connectUrl, fleet.token, 'silent', 0);
    expect(up.ok).toBe(true);
    if (!up.ok) return;
    const opened = Date.now();
    const closed = new Promise<number>((resolve) => up.ws.once('close', () => resolve(Date.now() - opened)));
    up.ws.on('error', () => {});
    // Well under the former fixed 10 s.
    const after = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(-1), 5_000).unref())]);
    if (after === -1) up.ws.terminate();
    expect(after).toBeGreaterThan(0);
    await fleet.relays[0]!.proc.waitForLog((l) => l.reason === 'no register message within 500 ms', 5_000, 'register timeout logged');
    await waitFor(async () => ((await limitHits(metrics)).register_timeout ?? 0) === before + 1, 5_000, { message: 'register_timeout counted' });
    expect((await req(`${fleet.relays[0]!.publicUrl}/alive`, { host: fleet.hostname })).text).toBe('ok /alive');
  });
});
