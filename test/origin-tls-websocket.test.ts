import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import * as path from 'node:path';
import { WebSocket, WebSocketServer } from 'ws';
import { startFleet, type Fleet } from './harness/fleet.js';
import { issueCert, makeCa, opensslMissing } from './harness/certs.js';

// originRequest TLS settings apply to WebSocket upgrades to an https origin as
// they do to plain requests: an origin signed by a private CA is reached with
// caPool, refused (502) without it or under the wrong originServerName, and
// reached with noTLSVerify.

const skip = opensslMissing('https WebSocket origin');

/** Opens a WebSocket through the relay; resolves with the echo of one message, or the HTTP status that refused the upgrade. */
function echoThrough(fleet: Fleet, pathname: string): Promise<{ echo: string } | { status: number }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${fleet.relays[0]!.http}${pathname}`, { headers: { host: fleet.hostname }, handshakeTimeout: 10_000 });
    ws.once('unexpected-response', (_req, res) => {
      resolve({ status: res.statusCode ?? 0 });
      res.resume();
      ws.terminate();
    });
    ws.once('open', () => ws.send('ping over tls'));
    ws.once('message', (d) => {
      resolve({ echo: String(d) });
      ws.close();
    });
    ws.once('error', (e) => reject(e));
  });
}

describe.skipIf(skip)('WebSocket upgrades to an https origin use originRequest TLS settings', () => {
  let fleet: Fleet;
  let server: https.Server;

  beforeAll(async () => {
    fleet = await startFleet({ relays: 1 });
    const ca = makeCa(fleet.dir, 'Origin CA');
    const leaf = issueCert(ca, path.join(fleet.dir, 'origin'));
    server = https.createServer({ cert: readFileSync(leaf.cert), key: readFileSync(leaf.key) });
    const wss = new WebSocketServer({ server });
    wss.on('connection', (ws) => ws.on('message', (d) => ws.send(String(d))));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const origin = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
    const config = path.join(fleet.dir, 'config.yml');
    writeFileSync(
      config,
      [
        'ingress:',
        '  - path: ^/with-ca',
        `    service: ${origin}`,
        '    originRequest:',
        `      caPool: ${ca.cert}`,
        '  - path: ^/wrong-name',
        `    service: ${origin}`,
        '    originRequest:',
        `      caPool: ${ca.cert}`,
        '      originServerName: not-this-origin.internal',
        '  - path: ^/no-verify',
        `    service: ${origin}`,
        '    originRequest:',
        '      noTLSVerify: true',
        `  - service: ${origin}`,
        '',
      ].join('\n'),
    );
    await fleet.connector({ config, ha: 1 });
  }, 60_000);

  afterAll(async () => {
    await fleet?.close();
    server?.closeAllConnections();
    server?.close();
  });

  it('caPool: the private CA is trusted for the upgrade', async () => {
    expect(await echoThrough(fleet, '/with-ca')).toEqual({ echo: 'ping over tls' });
  });

  it('no caPool: the unknown CA is refused with 502', async () => {
    expect(await echoThrough(fleet, '/system-roots')).toEqual({ status: 502 });
  });

  it('originServerName: the name the certificate must carry (it does not here: 502)', async () => {
    expect(await echoThrough(fleet, '/wrong-name')).toEqual({ status: 502 });
  });

  it('noTLSVerify: the upgrade skips the check', async () => {
    expect(await echoThrough(fleet, '/no-verify')).toEqual({ echo: 'ping over tls' });
  });
});
