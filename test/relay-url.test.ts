import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { verifyToken, RELAY_DESCRIPTION_KIND, RELAY_DESCRIPTION_PATH } from '@tunnel/protocol';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { CONNECTOR_CLI, RELAY_CLI, createTunnel, runCli, startConnector, startRelay, stopAll, tempDir, type RelayProc } from './harness/procs.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { req } from './harness/http.js';
import { freePort } from './harness/ports.js';

// One relay URL for every command: each listener of a relay (public,
// connector endpoint, control API) answers /.well-known/tunnel-relay, and
// `tunnel login`, `tunnel run` and `tunnel access tcp` take any of them.

describe('one relay URL', () => {
  const tmp = tempDir();
  const keys = path.join(tmp.dir, 'fleet-key.json');
  const store = `file:${path.join(tmp.dir, 'store')}`;
  let fleetKey: string;
  let relay: RelayProc;
  let origin: Origin;
  let notARelay: http.Server;
  let notARelayUrl: string;

  beforeAll(async () => {
    fleetKey = generateKeyFile(keys).publicKey;
    origin = await startOrigin((q, s) => s.end(`origin ${q.url}`));
    relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-one' });
    // An ordinary web server: what a mistyped URL usually reaches.
    notARelay = http.createServer((_q, s) => {
      s.writeHead(404, { 'content-type': 'text/html', server: 'nginx/1.24.0' });
      s.end('<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>');
    });
    await new Promise<void>((r) => notARelay.listen(0, '127.0.0.1', r));
    notARelayUrl = `http://127.0.0.1:${(notARelay.address() as import('node:net').AddressInfo).port}`;
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    notARelay?.close();
    tmp.cleanup();
  });

  it('every listener answers the same signed description, naming which listener answered', async () => {
    const answers: Record<string, Record<string, unknown>> = {};
    for (const [name, base] of [['public', relay.publicUrl], ['connect', `http://127.0.0.1:${relay.connect}`], ['control', relay.controlUrl!]] as const) {
      const r = await req(`${base}${RELAY_DESCRIPTION_PATH}`);
      expect(r.status, `${name}: ${r.text}`).toBe(200);
      expect(r.header('content-type')).toMatch(/^application\/json/);
      answers[name] = r.json() as Record<string, unknown>;
      expect(answers[name]!.answeredBy).toBe(name);
    }
    const doc = answers.control!;
    expect(doc).toMatchObject({ tunnelRelay: 1, relayId: 'relay-one', connect: [relay.connectUrl], control: relay.controlUrl, public: relay.publicUrl, fleetKey });
    const signed = verifyToken(RELAY_DESCRIPTION_KIND, doc.signed as string, fleetKey).claims;
    expect(signed).toMatchObject({ relayId: 'relay-one', connect: [relay.connectUrl], control: relay.controlUrl, public: relay.publicUrl });
    const post = await req(`${relay.controlUrl}${RELAY_DESCRIPTION_PATH}`, { method: 'POST', body: '{}' });
    expect(post.status).toBe(405);
  });

  it('on the public listener a routed hostname keeps the path for its origin', async () => {
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'web', hostnames: ['web.url.test'] });
    await startConnector({ token, relays: [relay.connectUrl], url: origin.url, ha: 1 });
    const routed = await req(`${relay.publicUrl}${RELAY_DESCRIPTION_PATH}`, { host: 'web.url.test' });
    expect(routed.status).toBe(200);
    expect(routed.text).toBe(`origin ${RELAY_DESCRIPTION_PATH}`);
  });

  it('`tunnel login` takes the public URL or the connector endpoint and records what it learned', async () => {
    for (const [i, url] of [relay.publicUrl, relay.connectUrl].entries()) {
      const home = path.join(tmp.dir, `home-${i}`);
      const acct = await runCli(RELAY_CLI, ['account', 'create', `user${i}`, '--store', store, '--keys', keys], {}, tmp.dir);
      expect(acct.code, acct.stderr).toBe(0);
      const login = await runCli(CONNECTOR_CLI, ['login', '--relay', url, '--enroll', acct.stdout.trim()], { TUNNEL_HOME: home });
      expect(login.code, login.stderr).toBe(0);
      const cert = JSON.parse(readFileSync(path.join(home, 'cert.json'), 'utf8')) as Record<string, unknown>;
      expect(cert.controlUrl).toBe(relay.controlUrl);
      expect(cert.relay).toMatchObject({ url, relayId: 'relay-one', connect: [relay.connectUrl], control: relay.controlUrl, public: relay.publicUrl, fleetKey });
      const list = await runCli(CONNECTOR_CLI, ['list'], { TUNNEL_HOME: home });
      expect(list.code, list.stderr).toBe(0);
    }
  });

  it('`tunnel run --relay` with the control API or public URL dials the connector endpoint', async () => {
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'via-control', hostnames: ['ctl.url.test'] });
    for (const url of [relay.controlUrl!, relay.publicUrl]) {
      const c = await startConnector({ token, relays: [url], url: origin.url, ha: 1, extraArgs: ['--no-discover'] });
      const starting = c.logs.find((l) => l.event === 'starting');
      expect(starting?.relays).toEqual([relay.connectUrl]);
      await c.stop(5_000);
    }
  });

  it('a wrong URL is one line naming what is there: nothing, or a web server that is not a relay', async () => {
    const closed = await freePort();
    const token = await createTunnel({ dir: tmp.dir, store, keys, name: 'wrong', hostnames: ['wrong.url.test'] });
    const nothing = await runCli(CONNECTOR_CLI, ['run', '--url', origin.url, '--relay', `http://127.0.0.1:${closed}`], { TUNNEL_TOKEN: token });
    expect(nothing.code).toBe(1);
    expect(nothing.stderr).toBe(`tunnel: nothing answers at http://127.0.0.1:${closed}: ECONNREFUSED (relay_unreachable)\n`);
    const web = await runCli(CONNECTOR_CLI, ['login', '--relay', notARelayUrl, '--enroll', 'x'], { TUNNEL_HOME: path.join(tmp.dir, 'wrong-home') });
    expect(web.code).toBe(1);
    expect(web.stderr).toBe(
      `tunnel: ${notARelayUrl} is not a tunnel relay: GET ${RELAY_DESCRIPTION_PATH} answered HTTP 404 with an HTML page titled "404 Not Found" (server: nginx/1.24.0) (not_a_relay)\n`,
    );
    const access = await runCli(CONNECTOR_CLI, ['access', 'tcp', '--hostname', 'wrong.url.test', '--relay', notARelayUrl]);
    expect(access.code).toBe(1);
    expect(access.stderr.split('\n').filter(Boolean)).toHaveLength(1);
    expect(access.stderr).toMatch(/is not a tunnel relay/);
  });
});
