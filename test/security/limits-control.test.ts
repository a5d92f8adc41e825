import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { Agent, request } from 'undici';
import { generateKeyFile } from '../../packages/relay/src/control/keys.js';
import { RELAY_CLI, runCli, startRelay, stopAll, tempDir, type RelayProc } from '../harness/procs.js';
import { waitFor } from '../harness/wait.js';
import { limitHits, metricsUrl, scrape } from '../harness/limit-metrics.js';

// Ceilings on the control port: pending `tunnel login` sessions per client
// IP and in total (429 with a reason; expired ones stop counting), and one
// throttle on operator-key guesses shared by every path that takes the key
// (control API Bearer, dashboard form, relay stats). Plus cross-account
// access through the control API, which must find nothing of another
// account's.

const OPERATOR_KEY = 'limits-operator-key-0123456789';
const BOX_KEY = 'A'.repeat(44);

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: { error?: { code: string; message: string } } & Record<string, unknown>;
  text: string;
}

// Fresh connections each time: the control server is plain keep-alive HTTP.
const agent = new Agent({ pipelining: 0 });

async function call(base: string, method: string, p: string, o: { auth?: string; json?: unknown; form?: string } = {}): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (o.auth) headers.authorization = `Bearer ${o.auth}`;
  let body: string | undefined;
  if (o.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(o.json);
  } else if (o.form !== undefined) {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    body = o.form;
  }
  const r = await request(`${base}${p}`, { method: method as 'GET', headers, body, dispatcher: agent });
  const text = await r.body.text();
  let parsed: Answer['body'] = {};
  try {
    parsed = JSON.parse(text) as Answer['body'];
  } catch {
    /* HTML (dashboard) */
  }
  return { status: r.statusCode, headers: r.headers as Answer['headers'], body: parsed, text };
}

describe('security: control-port ceilings and cross-account access', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  const store = `file:${path.join(tmp.dir, 'store')}`;
  let relay: RelayProc;
  let metrics: string;

  beforeAll(async () => {
    generateKeyFile(keys);
    relay = await startRelay({
      dir: tmp.dir,
      store,
      keys,
      id: 'relay-ctl',
      extraArgs: ['--metrics', '127.0.0.1:0', '--login-ttl', '3s', '--max-pending-logins-per-ip', '3', '--operator-key-failures', '3', '--operator-key-window', '60s'],
      env: { TUNNEL_RELAY_OPERATOR_KEY: OPERATOR_KEY },
    });
    metrics = await metricsUrl(relay);
  });
  afterAll(async () => {
    await agent.close();
    await stopAll();
    tmp.cleanup();
  });

  const base = () => relay.controlUrl!;

  it('another account reaches none of your tunnels or routes through the control API', async () => {
    const credentialOf = async (name: string) => {
      const acct = await call(base(), 'POST', '/v1/operator/accounts', { auth: OPERATOR_KEY, json: { name } });
      expect(acct.status).toBe(201);
      const enrolled = await call(base(), 'POST', '/v1/enroll', { json: { token: acct.body.enrollToken } });
      expect(enrolled.status).toBe(200);
      return enrolled.body.credential as string;
    };
    const alice = await credentialOf('alice');
    const mallory = await credentialOf('mallory');
    const created = await call(base(), 'POST', '/v1/tunnels', { auth: alice, json: { name: 'secret' } });
    expect(created.status).toBe(201);
    const tunnelId = (created.body.tunnel as { id: string }).id;
    // An account routes only inside zones it holds.
    expect((await runCli(RELAY_CLI, ['zone', 'add', 'alice.test', '--account', 'alice', '--store', store], {}, tmp.dir)).code).toBe(0);
    expect((await call(base(), 'POST', '/v1/routes', { auth: alice, json: { hostname: 'secret.alice.test', tunnel: tunnelId } })).status).toBe(201);

    const attempts: Array<[string, string, unknown?]> = [
      ['GET', `/v1/tunnels/${tunnelId}`],
      ['GET', `/v1/tunnels/${tunnelId}/token`],
      ['POST', `/v1/tunnels/${tunnelId}/cleanup`],
      ['DELETE', `/v1/tunnels/${tunnelId}?force=true`],
      ['POST', '/v1/routes', { hostname: 'evil.alice.test', tunnel: tunnelId }],
      ['DELETE', '/v1/routes/secret.alice.test'],
    ];
    for (const [m, p, json] of attempts) {
      const r = await call(base(), m, p, { auth: mallory, json });
      expect(r.status, `${m} ${p}`).toBe(404);
      expect(r.text).not.toContain('"secret"');
      expect(r.text).not.toContain('"token"');
    }
    const list = await call(base(), 'GET', '/v1/tunnels', { auth: mallory });
    expect(list.body.tunnels).toEqual([]);
    expect((await call(base(), 'GET', '/v1/routes', { auth: mallory })).body.routes).toEqual([]);
    // Still all there for alice.
    expect((await call(base(), 'GET', `/v1/tunnels/${tunnelId}`, { auth: alice })).status).toBe(200);
    expect(((await call(base(), 'GET', '/v1/routes', { auth: alice })).body.routes as unknown[]).length).toBe(1);
  });

  it('pending logins per client IP: a 429 with a reason past the cap, counted; expired ones stop counting', async () => {
    const before = await limitHits(metrics);
    for (let i = 0; i < 3; i++) expect((await call(base(), 'POST', '/v1/login', { json: { boxPublicKey: BOX_KEY } })).status).toBe(201);
    const refused = await call(base(), 'POST', '/v1/login', { json: { boxPublicKey: BOX_KEY } });
    expect(refused.status).toBe(429);
    expect(refused.body.error?.code).toBe('too_many_logins');
    expect(refused.body.error?.message).toMatch(/your address has 3 pending logins \(limit 3\)/);
    expect(refused.headers['retry-after']).toBeDefined();
    const after = await limitHits(metrics);
    expect(after.pending_logins_per_ip! - before.pending_logins_per_ip!).toBe(1);
    expect((await scrape(metrics, 'tunnel_relay_pending_logins')).get('')).toBe(3);
    // The login TTL is 3 s: once they expire they stop counting, and a new login
    // is taken again. (Wait for all three: on a loaded machine they were made
    // far enough apart that a poll could land between two expiries.)
    await waitFor(async () => (await scrape(metrics, 'tunnel_relay_pending_logins')).get('') === 0, 10_000, { intervalMs: 250, message: 'the three logins expired' });
    const again = await call(base(), 'POST', '/v1/login', { json: { boxPublicKey: BOX_KEY } });
    expect(again.status).toBe(201);
    expect(again.body.code).toMatch(/^[A-Z0-9]{4}-[A-Z0-9]{4}$/);
    expect((await scrape(metrics, 'tunnel_relay_pending_logins')).get('')).toBe(1);
  });

  it('wrong operator keys are throttled per IP across every path that takes the key: then even the right key is a 429', async () => {
    const before = await limitHits(metrics);
    // Three wrong tries, by three different paths: Bearer on the control API, the dashboard form, Bearer on relay stats.
    expect((await call(base(), 'GET', '/v1/operator/logins', { auth: 'wrong-key-000000000' })).status).toBe(401);
    expect((await call(base(), 'POST', '/dashboard/login', { form: 'key=wrong-key-111111111' })).status).toBe(401);
    expect((await call(base(), 'GET', '/dashboard/api/relay-stats', { auth: 'wrong-key-222222222' })).status).toBe(401);
    // Now every path refuses, the right key included, with Retry-After.
    const bearer = await call(base(), 'GET', '/v1/operator/logins', { auth: OPERATOR_KEY });
    expect(bearer.status).toBe(429);
    expect(bearer.body.error?.code).toBe('too_many_key_failures');
    expect(Number(bearer.headers['retry-after'])).toBeGreaterThan(0);
    const form = await call(base(), 'POST', '/dashboard/login', { form: `key=${OPERATOR_KEY}` });
    expect(form.status).toBe(429);
    expect(Number(form.headers['retry-after'])).toBeGreaterThan(0);
    expect(form.headers['set-cookie']).toBeUndefined();
    const stats = await call(base(), 'GET', '/dashboard/api/relay-stats', { auth: OPERATOR_KEY });
    expect(stats.status).toBe(429);
    const after = await limitHits(metrics);
    expect(after.operator_key_failures! - before.operator_key_failures!).toBe(3);
    // The relay itself carries on.
    expect((await call(base(), 'GET', '/healthz')).status).toBe(200);
    expect(relay.proc.running).toBe(true);
  });
});
