import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Agent } from 'undici';
import { generateKeyFile } from '../packages/relay/src/control/keys.js';
import { createTunnel, runCli, startConnector, startRelay, stopAll, tempDir, CONNECTOR_CLI, type RelayProc } from './harness/procs.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { req } from './harness/http.js';

// Production shape: connectors dial wss:// and the public side is HTTPS.
// The relay's certificate is self-signed here, trusted through Node's
// standard NODE_EXTRA_CA_CERTS (what an operator with a private CA would use).

let opensslMissing: string | null = null;
try {
  execFileSync('openssl', ['version'], { stdio: 'ignore' });
} catch {
  opensslMissing = 'openssl is not installed';
  if (process.env.CI === 'true') throw new Error(opensslMissing);
  console.log(`skipping TLS test: ${opensslMissing}`);
}

describe.skipIf(opensslMissing !== null)('TLS: wss:// connector endpoint and HTTPS public listener', () => {
  const tmp = tempDir();
  const cert = path.join(tmp.dir, 'relay.pem');
  const key = path.join(tmp.dir, 'relay.key');
  let relay: RelayProc;
  let origin: Origin;
  let token: string;

  beforeAll(async () => {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:secure.test,DNS:localhost', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    const keys = path.join(tmp.dir, 'fleet-key.json');
    generateKeyFile(keys);
    const store = `file:${path.join(tmp.dir, 'store')}`;
    relay = await startRelay({ dir: tmp.dir, store, keys, id: 'relay-tls', extraArgs: ['--tls-cert', cert, '--tls-key', key, '--https', '127.0.0.1:0'] });
    origin = await startOrigin((q, s) => s.end(`secure ${q.headers['x-forwarded-proto']} ${q.url}`));
    token = await createTunnel({ dir: tmp.dir, store, keys, name: 'secure', hostnames: ['secure.test'], relays: [`wss://127.0.0.1:${relay.connect}`] });
  });
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    tmp.cleanup();
  });

  it('connects over wss:// and serves HTTPS with X-Forwarded-Proto https', async () => {
    const line = relay.proc.logs.find((l) => l.event === 'listening')!;
    const httpsPort = (line.ports as { https: number }).https;
    await startConnector({ token, relays: [`wss://127.0.0.1:${relay.connect}`], url: origin.url, env: { NODE_EXTRA_CA_CERTS: cert } });
    const dispatcher = new Agent({ connect: { ca: readFileSync(cert), servername: 'secure.test' } });
    const r = await req(`https://127.0.0.1:${httpsPort}/x`, { host: 'secure.test', dispatcher });
    expect(r.status).toBe(200);
    expect(r.text).toBe('secure https /x');
    await dispatcher.close();
  });

  it('the control API and the peer endpoint are TLS too, and the relay advertises https:// and wss://', async () => {
    const dispatcher = new Agent({ connect: { ca: readFileSync(cert) } });
    const health = await req(`https://127.0.0.1:${relay.control}/healthz`, { dispatcher });
    expect(health.json()).toMatchObject({ status: 'ok', relayId: 'relay-tls' });
    // The peer endpoint answers a TLS client (and refuses an unsigned request).
    const peer = await req(`https://127.0.0.1:${relay.peer}/`, { host: 'secure.test', dispatcher });
    expect(peer.header('tunnel-error')).toBe('peer_refused');
    const list = (await req(`https://127.0.0.1:${relay.control}/v1/relays`, { dispatcher })).json<{ relays: Array<{ connectUrl: string; controlUrl: string }>; signed: string }>();
    expect(list.relays).toEqual([expect.objectContaining({ connectUrl: `wss://127.0.0.1:${relay.connect}`, controlUrl: `https://127.0.0.1:${relay.control}` })]);
    expect(typeof list.signed).toBe('string');
    await dispatcher.close();
  });

  it('a connector that does not trust the relay certificate fails to connect and says why', async () => {
    const c = await startConnector({ token, relays: [`wss://127.0.0.1:${relay.connect}`], url: origin.url, waitRegistered: 0, ha: 1 });
    const lost = await c.waitForLog((l) => l.event === 'backoff', 10_000);
    expect(String(lost.reason)).toMatch(/self.signed|certificate/i);
    await c.stop();
    const plain = await runCli(CONNECTOR_CLI, ['ingress', 'rule', 'https://x.test/', '--config', path.join(tmp.dir, 'missing.yml')]);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/missing\.yml.*cannot read config file: no such file/);
  });
});
