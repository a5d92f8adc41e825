import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type http from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { WebSocket, WebSocketServer } from 'ws';
import { request } from 'undici';
import { fleetIssuer } from '@tunnel/protocol';
import { generateKeyFile, loadKeyFile } from '../packages/relay/src/control/keys.js';
import { CONNECTOR_CLI, Proc, RELAY_CLI, runCli, startRelay, stopAll, tempDir, type RelayProc } from './harness/procs.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';

// Issue 15, Access (DESIGN §14), the machine half: a service token lets curl
// through a policy, every request let through carries a signed assertion the
// origin can verify with the fleet's JWKS, the connector enforces it when its
// config asks, client-sent copies are dropped, and a revoked token or a new
// policy applies on every relay within 5 s. Real relays (two, so peer
// forwarding is crossed), a real connector, a real origin, the real CLI.

interface Seen {
  host: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

describe('Access: policies, service tokens, the signed assertion and the connector that checks it', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  const store = `file:${path.join(tmp.dir, 'store')}`;
  const home = path.join(tmp.dir, 'alice');
  const seen: Seen[] = [];
  let origin: Origin;
  let a: RelayProc;
  let b: RelayProc;
  let connector: Proc;
  let token: { clientId: string; clientSecret: string };
  let aud: string;
  const tunnel = (args: string[]) => runCli(CONNECTOR_CLI, args, { TUNNEL_HOME: home });

  beforeAll(async () => {
    generateKeyFile(keys);
    origin = await startOrigin((q, s) => {
      seen.push({ host: q.headers.host ?? '', url: q.url ?? '', headers: q.headers });
      if (q.url === '/sse') {
        s.writeHead(200, { 'content-type': 'text/event-stream' });
        s.write('data: one\n\n');
        return; // held open: the test reads the first event and leaves
      }
      s.end(`ok ${q.url}`);
    });
    const wss = new WebSocketServer({ server: origin.server });
    wss.on('connection', (ws, q) => {
      seen.push({ host: q.headers.host ?? '', url: q.url ?? '', headers: q.headers });
      ws.on('message', (m) => ws.send(`echo ${m.toString()}`));
    });
    a = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-a' });
    b = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-b' });
    const acct = await runCli(RELAY_CLI, ['account', 'create', 'alice', '--store', store, '--keys', keys], {}, tmp.dir);
    expect(acct.code, acct.stderr).toBe(0);
    expect((await tunnel(['login', '--relay', a.controlUrl!, '--enroll', acct.stdout.trim()])).code).toBe(0);
    expect((await runCli(RELAY_CLI, ['zone', 'add', 'alice.test', '--account', 'alice', '--store', store], {}, tmp.dir)).code).toBe(0);
    expect((await tunnel(['create', 'a'])).code).toBe(0);
    for (const h of ['app.alice.test', 'open.alice.test', 'bypass.alice.test']) expect((await tunnel(['route', 'dns', 'a', h])).code).toBe(0);

    const created = await tunnel(['access', 'token', 'create', 'ci', '--output', 'json']);
    expect(created.code, created.stderr).toBe(0);
    token = JSON.parse(created.stdout) as { clientId: string; clientSecret: string };
    expect(token.clientSecret).toMatch(/^[0-9a-f]{64}$/);
    const added = await tunnel(['access', 'policy', 'add', 'app.alice.test', '--service-token', 'ci', '--output', 'json']);
    expect(added.code, added.stderr).toBe(0);
    aud = (JSON.parse(added.stdout) as { audTag: string }).audTag;
    expect((await tunnel(['access', 'policy', 'add', 'bypass.alice.test', '--bypass'])).code).toBe(0);

    const config = path.join(tmp.dir, 'config.yml');
    const rule = (host: string) => `  - hostname: ${host}\n    service: ${origin.url}\n    originRequest:\n      access:\n        required: true\n        audTag: [${aud}]\n`;
    writeFileSync(config, `ingress:\n${rule('app.alice.test')}${rule('bypass.alice.test')}  - service: ${origin.url}\n`);
    // One connection, to relay A only: requests that arrive at B are forwarded to A.
    connector = new Proc('connector', process.execPath, [CONNECTOR_CLI, 'run', 'a', '--config', config, '--relay', a.connectUrl, '--no-discover', '--ha-connections', '1', '--log-format', 'json'], { TUNNEL_HOME: home });
    await waitFor(() => connector.countLogs((l) => l.event === 'registered') >= 1 || !connector.running, 15_000, { message: 'connector registered' });
    expect(connector.running, connector.stderr).toBe(true);
    // B learns of A's connection through the shared store, not at once: wait
    // until B forwards (open.alice.test has no policy yet), so the peer test
    // below is about Access and not about how fast the fleet view converges.
    await waitFor(async () => (await req(`${b.publicUrl}/`, { host: 'open.alice.test' })).status === 200, 15_000, { message: 'relay B forwards to the connection on A' });
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    tmp.cleanup();
  });

  const get = (relay: RelayProc, host: string, headers: Record<string, string> = {}, p = '/') => req(`${relay.publicUrl}${p}`, { host, headers: { accept: 'application/json', ...headers } });
  const withToken = (extra: Record<string, string> = {}) => ({ 'Tunnel-Access-Client-Id': token.clientId, 'Tunnel-Access-Client-Secret': token.clientSecret, ...extra });
  const jwks = async () => createLocalJWKSet((await req(`${a.controlUrl}/.well-known/tunnel-access/certs`)).json<JSONWebKeySet>());

  it('without credentials the relay refuses (403 access_denied) and the origin is never reached', async () => {
    const before = seen.length;
    const r = await get(a, 'app.alice.test');
    expect(r.status).toBe(403);
    expect(r.header('tunnel-error')).toBe('access_denied');
    expect(r.header('tunnel-error-source')).toBe('relay');
    expect(r.header('tunnel-request-id')).toMatch(/^[0-9a-f]{21}$/);
    expect(r.json<{ error: { requestId: string } }>().error.requestId).toBe(r.header('tunnel-request-id'));
    expect(seen.length).toBe(before);
  });

  it('a service token gets curl in; the origin receives a fleet-signed assertion it can verify, and never the secret', async () => {
    const r = await get(a, 'app.alice.test', withToken(), '/hello');
    expect(r.status, r.text).toBe(200);
    expect(r.text).toBe('ok /hello');
    const got = seen.at(-1)!;
    expect(got.headers['tunnel-access-client-secret']).toBeUndefined();
    expect(got.headers['tunnel-access-client-id']).toBeUndefined();
    const jwt = got.headers['tunnel-access-jwt-assertion'] as string;
    expect(decodeProtectedHeader(jwt).alg).toBe('EdDSA');
    const { payload } = await jwtVerify(jwt, await jwks(), { issuer: fleetIssuer(loadKeyFile(keys).publicKey), audience: aud, algorithms: ['EdDSA'] });
    expect(payload.sub).toBe(token.clientId);
    expect(payload.exp! - payload.iat!).toBeLessThanOrEqual(300);
    expect(Math.abs(payload.iat! * 1000 - Date.now())).toBeLessThan(120_000);
    expect(payload).toMatchObject({ type: 'service-token', service_token_name: 'ci', host: 'app.alice.test' });
  });

  it('a wrong secret, an unknown id, or an id alone: 403 access_token_refused, never a fallback', async () => {
    const before = seen.length;
    for (const h of [
      withToken({ 'Tunnel-Access-Client-Secret': '0'.repeat(64) }),
      withToken({ 'Tunnel-Access-Client-Id': 'nobody.access' }),
      { 'Tunnel-Access-Client-Id': token.clientId },
    ]) {
      const r = await get(a, 'app.alice.test', h);
      expect(r.status).toBe(403);
      expect(r.header('tunnel-error')).toBe('access_token_refused');
    }
    expect(seen.length).toBe(before);
  });

  it('through peer forwarding (relay B holds no connection): the assertion made on B reaches the origin and checks out at the connector', async () => {
    const r = await get(b, 'app.alice.test', withToken(), '/via-b');
    expect(r.status, r.text).toBe(200);
    expect(r.text).toBe('ok /via-b');
    const jwt = seen.at(-1)!.headers['tunnel-access-jwt-assertion'] as string;
    await jwtVerify(jwt, await jwks(), { audience: aud });
    expect((await get(b, 'app.alice.test')).status).toBe(403);
  });

  it('client-sent assertion and identity headers are dropped, on open hostnames and next to a valid token', async () => {
    const forged = { 'Tunnel-Access-Jwt-Assertion': 'forged.jwt.value', 'Tunnel-Access-Authenticated-User-Email': 'ceo@alice.test', 'tunnel-access-jwt-assertion': 'lower' };
    const open = await get(a, 'open.alice.test', forged, '/open');
    expect(open.status).toBe(200);
    let h = seen.at(-1)!.headers;
    expect(h['tunnel-access-jwt-assertion']).toBeUndefined();
    expect(h['tunnel-access-authenticated-user-email']).toBeUndefined();
    const both = await get(a, 'app.alice.test', withToken(forged), '/both');
    expect(both.status).toBe(200);
    h = seen.at(-1)!.headers;
    // node joins repeated headers with ", ": one value means one header.
    expect(String(h['tunnel-access-jwt-assertion']).split(',')).toHaveLength(1);
    await jwtVerify(String(h['tunnel-access-jwt-assertion']), await jwks(), { audience: aud });
    expect(h['tunnel-access-authenticated-user-email']).toBeUndefined();
  });

  it('a bypass policy sends no assertion: the connector that requires one answers 403 itself and the origin is never reached', async () => {
    const before = seen.length;
    const r = await get(a, 'bypass.alice.test', { 'Tunnel-Access-Jwt-Assertion': 'forged' });
    expect(r.status).toBe(403);
    expect(r.header('tunnel-error')).toBe('access_assertion_refused');
    expect(r.header('tunnel-error-source')).toBe('connector');
    expect(seen.length).toBe(before);
  });

  it('WebSockets: the upgrade passes with a service token (assertion included), and is refused without', async () => {
    const open = (headers: Record<string, string>) =>
      new Promise<string | number>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${a.http}/ws`, { headers: { host: 'app.alice.test', ...headers }, handshakeTimeout: 10_000 });
        ws.on('open', () => ws.send('hi'));
        ws.on('message', (m) => {
          resolve(m.toString());
          ws.close();
        });
        ws.on('unexpected-response', (_q, res) => {
          resolve(res.statusCode ?? 0);
          res.resume();
        });
        ws.on('error', reject);
      });
    expect(await open(withToken())).toBe('echo hi');
    await jwtVerify(seen.at(-1)!.headers['tunnel-access-jwt-assertion'] as string, await jwks(), { audience: aud });
    expect(await open({})).toBe(403);
  });

  it('SSE: an allowed event stream starts flowing before it ends', async () => {
    const ac = new AbortController();
    const u = await request(`${a.publicUrl}/sse`, { headers: { host: 'app.alice.test', ...withToken() }, signal: ac.signal });
    expect(u.statusCode).toBe(200);
    for await (const chunk of u.body) {
      expect(Buffer.from(chunk as Buffer).toString()).toContain('data: one');
      break;
    }
    ac.abort();
  });

  it('a policy needing logins is refused without an identity provider, with the command to fix it', async () => {
    const r = await tunnel(['access', 'policy', 'add', 'open.alice.test', '--allow-email', 'alice@alice.test']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('tunnel access idp set');
    const other = await tunnel(['access', 'policy', 'add', 'elsewhere.test', '--service-token', 'ci']);
    expect(other.code).not.toBe(0);
    expect(other.stderr).toMatch(/zone/);
  });

  it('a new policy and its removal apply on every relay within 5 s', async () => {
    expect((await get(b, 'open.alice.test')).status).toBe(200);
    const t0 = Date.now();
    expect((await tunnel(['access', 'policy', 'add', 'open.alice.test', '--deny'])).code).toBe(0);
    for (const relay of [a, b]) await waitFor(async () => (await get(relay, 'open.alice.test')).status === 403, 5_000, { message: `deny on ${relay.id}` });
    expect(Date.now() - t0).toBeLessThan(5_000);
    const listed = await tunnel(['access', 'policy', 'list', '--output', 'json']);
    expect((JSON.parse(listed.stdout) as Array<{ hostname: string }>).map((p) => p.hostname).sort()).toEqual(['app.alice.test', 'bypass.alice.test', 'open.alice.test']);
    const t1 = Date.now();
    expect((await tunnel(['access', 'policy', 'remove', 'open.alice.test'])).code).toBe(0);
    for (const relay of [a, b]) await waitFor(async () => (await get(relay, 'open.alice.test')).status === 200, 5_000, { message: `open again on ${relay.id}` });
    expect(Date.now() - t1).toBeLessThan(5_000);
  });

  it('a revoked service token stops on every relay within 5 s', async () => {
    expect((await get(b, 'app.alice.test', withToken())).status).toBe(200);
    const listed = await tunnel(['access', 'token', 'list', '--output', 'json']);
    expect(listed.stdout).not.toContain(token.clientSecret);
    const t0 = Date.now();
    const r = await tunnel(['access', 'token', 'revoke', 'ci']);
    expect(r.code, r.stderr).toBe(0);
    for (const relay of [a, b]) await waitFor(async () => (await get(relay, 'app.alice.test', withToken())).status === 403, 5_000, { message: `token refused on ${relay.id}` });
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  it('the JWKS is public, lists the previous, current and next keys, and never a private part', async () => {
    const r = await req(`${a.controlUrl}/.well-known/tunnel-access/certs`);
    expect(r.status).toBe(200);
    const set = r.json<JSONWebKeySet>();
    expect(set.keys).toHaveLength(3);
    for (const k of set.keys) {
      expect(k).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig' });
      expect(k).not.toHaveProperty('d');
    }
    // Every relay of the fleet publishes the same keys.
    expect((await req(`${b.controlUrl}/.well-known/tunnel-access/certs`)).json()).toEqual(set);
    expect(readFileSync(keys, 'utf8')).not.toContain(String(set.keys[0]!.x));
  });
});
