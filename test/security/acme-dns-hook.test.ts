import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pidAlive, stopAll, tempDir, type RelayProc } from '../harness/procs.js';
import { opensslMissing } from '../harness/certs.js';
import { metricsUrl, scrape } from '../harness/limit-metrics.js';
import { peerCertificate } from '../harness/acme-peer.js';
import type { DnsHookScript } from '../harness/acme-dns-hook.js';
import { startDnsHookRelay, type DnsHookRelay } from '../harness/acme-dns-relay.js';
import { pebbleMissing } from '../harness/pebble.js';
import { waitFor } from '../harness/wait.js';

// The operator's DNS hook is a program the relay runs during an order; it
// can hang or fail. A hang is killed at --acme-dns-hook-timeout together with
// what it started, a failure is logged with what the hook wrote to stderr,
// and either way the name backs off (no order storm), the handshake gets the
// fallback certificate and the relay serves on.

const skip = opensslMissing('ACME DNS hook abuse test') ?? pebbleMissing('ACME DNS hook abuse test');

const handshakeSubject = async (port: number, servername: string) => (await peerCertificate(port, servername)).subject;

describe.skipIf(skip !== null)('ACME DNS hook: a hanging or failing hook', () => {
  const tmp = tempDir();
  let bed: DnsHookRelay | undefined;
  let hook: DnsHookScript;
  let relay: RelayProc;
  let metrics: string;
  let httpsPort: number;

  beforeAll(async () => {
    bed = await startDnsHookRelay({
      dir: tmp.dir,
      id: 'relay-hook',
      hostnames: ['hang.test', 'fails.test'],
      hook: { hang: ['_acme-challenge.hang.test'], fail: ['_acme-challenge.fails.test'] },
      relayArgs: ['--metrics', '127.0.0.1:0', '--acme-dns-hook-timeout', '1s', '--acme-retry-after', '10m'],
    });
    ({ hook, relay, httpsPort } = bed);
    metrics = await metricsUrl(relay);
  });
  afterAll(async () => {
    await stopAll();
    await bed?.close();
    tmp.cleanup();
  });

  it('a hook that hangs is killed at the limit with its child; the order fails and backs off; the handshake gets the fallback', async () => {
    expect(await handshakeSubject(httpsPort, 'hang.test')).toBe('CN=tunnel-relay fallback');
    const failed = await relay.proc.waitForLog((l) => l.event === 'acme-order-failed' && l.name === 'hang.test', 30_000);
    expect(failed).toMatchObject({ failures: 1, retryInMs: 600_000, rateLimited: false });
    expect(String(failed.err)).toMatch(/DNS hook .* set _acme-challenge\.hang\.test timed out after 1000 ms and was killed/);
    const set = hook.calls().find((x) => x.action === 'set' && x.record === '_acme-challenge.hang.test')!;
    expect(set.child).toBeGreaterThan(0);
    // The whole process group went: the hook and the grandchild it left running.
    await waitFor(() => !pidAlive(set.pid) && !pidAlive(set.child!), 5_000, { message: 'the hung hook and its child are gone' });
    expect((await scrape(metrics, 'tunnel_relay_acme_backoff_names')).get('')).toBe(1);
    // Within the back-off: no second order, no second hook run.
    const runs = hook.calls().length;
    expect(await handshakeSubject(httpsPort, 'hang.test')).toBe('CN=tunnel-relay fallback');
    expect(relay.proc.countLogs((l) => l.event === 'acme-order' && l.name === 'hang.test')).toBe(1);
    expect(hook.calls().length).toBe(runs);
  });

  it("a hook that fails has its stderr and exit status in the logged reason; the relay serves on", async () => {
    expect(await handshakeSubject(httpsPort, 'fails.test')).toBe('CN=tunnel-relay fallback');
    const failed = await relay.proc.waitForLog((l) => l.event === 'acme-order-failed' && l.name === 'fails.test', 30_000);
    expect(String(failed.err)).toMatch(/set _acme-challenge\.fails\.test failed \(exit 3\): zone not managed by this DNS provider/);
    const orders = await scrape(metrics, 'tunnel_relay_acme_orders_total');
    expect(orders.get('result=failed')).toBe(2);
    expect(orders.get('result=ok')).toBe(0);
    expect((await scrape(metrics, 'tunnel_relay_acme_backoff_names')).get('')).toBe(2);
    expect(relay.proc.running).toBe(true);
  });
});
