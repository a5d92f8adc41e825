import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import http from 'node:http';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { createTunnel, type Proc } from './harness/procs.js';
import { req } from './harness/http.js';
import { waitFor } from './harness/wait.js';
import { fakeConnector } from './security/peers.js';

// Anything from the network can be hostile: a connector that lies, junk on the
// connector port, oversized heads from clients. One stream or one session
// pays; the relay process and every other tunnel carry on.

describe('hostile input', () => {
  let fleet: Fleet;
  let origin: Origin;
  let good: Proc;
  let evilToken: string;

  beforeAll(async () => {
    origin = await startOrigin((q, s) => s.end(`ok ${q.url}`));
    fleet = await startFleet({ relays: 1 });
    good = await fleet.connector({ url: origin.url, ha: 2 });
    evilToken = await createTunnel({ dir: fleet.dir, store: fleet.store, keys: fleet.keys, name: 'evil', hostnames: ['evil.test'] });
  });
  afterAll(async () => {
    await fleet?.close();
    await origin?.close();
  });

  const relay = () => fleet.relays[0]!;
  const stillServing = async () => {
    expect(relay().proc.running).toBe(true);
    expect((await req(`${relay().publicUrl}/alive`, { host: fleet.hostname })).text).toBe('ok /alive');
  };

  it('a garbage response head is a 502 for that request only', async () => {
    const { session, ws } = await fakeConnector(relay().connectUrl, evilToken);
    session.on('stream', (s) => {
      s.on('error', () => {});
      s.resume();
      s.end(Buffer.from([0, 0, 0, 5, 9, 9, 9, 9, 9, 1, 2, 3]));
    });
    const r = await waitFor(async () => {
      const x = await req(`${relay().publicUrl}/x`, { host: 'evil.test', headers: { accept: 'application/json' } });
      return x.status === 530 ? null : x;
    }, 5_000);
    expect(r.status).toBe(502);
    expect(r.header('tunnel-error')).toBe('connector_bad_response');
    await stillServing();
    ws.terminate();
  });

  it('a malformed frame closes that session with a protocol-error GoAway, nothing else', async () => {
    const { ws } = await fakeConnector(relay().connectUrl, evilToken);
    const goaway = new Promise<Buffer>((resolve) => ws.on('message', (d: Buffer) => d.length >= 12 && d[1] === 3 && resolve(d)));
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    ws.send(Buffer.from([7, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])); // version 7
    const g = await goaway;
    expect(g.readUInt32BE(8)).toBe(1); // protocol error
    await closed;
    await stillServing();
  });

  it('junk bytes and a bad upgrade on the connector port are refused', async () => {
    await new Promise<void>((resolve) => {
      const s = connect(relay().connect, '127.0.0.1', () => s.end(Buffer.from('\x16\x03\x01garbage\r\n\r\n'.repeat(50))));
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.resume();
    });
    const noAuth = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const r = http.request({ host: '127.0.0.1', port: relay().connect, path: '/v1/connect', headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
      r.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      r.on('upgrade', () => reject(new Error('upgraded without a credential')));
      r.on('error', reject);
      r.end();
    });
    expect(noAuth.status).toBe(401);
    expect((JSON.parse(noAuth.body) as { error: { code: string } }).error.code).toBe('missing_credential');
    await stillServing();
  });

  it('a request head over the limits is a 431, not a crash', async () => {
    const headers: Record<string, string> = {};
    for (let i = 0; i < 300; i++) headers[`x-h-${i}`] = 'v';
    const r = await req(`${relay().publicUrl}/big`, { host: fleet.hostname, headers });
    expect(r.status).toBe(431);
    expect(r.header('tunnel-error')).toBe('request_head_too_large');
    await stillServing();
    expect(good.running).toBe(true);
  });
});
