import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import https from 'node:https';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { Agent } from 'undici';
import { generateSigningKeyPair, peekClaims, signToken, TokenKind, type RelayListClaims } from '@tunnel/protocol';
import { generateKeyFile, loadKeyFile } from '../../packages/relay/src/control/keys.js';
import { createTunnel, Proc, startConnector, startRelay, stopAll, tempDir, CONNECTOR_CLI, type RelayProc } from '../harness/procs.js';
import { startOrigin, type Origin } from '../harness/origin.js';
import { req } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';
import { issueCert, makeCa, opensslMissing, type Ca } from '../harness/certs.js';
import { parsePromText, sumOf } from '../harness/prom-text.js';

// An attacker who can answer the connector's `GET /v1/relays` (a lying
// control API, or anyone on a plain-HTTP path to one) names a relay of their
// own: a recorder that keeps every Authorization header it sees. The list it
// serves is unsigned, signed with the wrong key, or a real fleet-signed list
// with a ws:// entry for a connector that started on wss://. The tunnel token
// must never reach the recorder, the connector keeps serving through the real
// relays, and a routine drain of one of them moves nothing to the recorder.

const missing = opensslMissing('discovery trust tests');

/** A small real server (https and plain http) that records any Authorization header or upgrade it gets. */
interface Recorder {
  wssUrl: string;
  wsUrl: string;
  hits: string[];
  close(): Promise<void>;
}

async function startRecorder(tlsPair: { cert: Buffer; key: Buffer }): Promise<Recorder> {
  const hits: string[] = [];
  const onReq = (q: http.IncomingMessage, s: http.ServerResponse) => {
    hits.push(`${q.method} ${q.url} auth=${q.headers.authorization ?? ''}`);
    s.writeHead(404).end();
  };
  const onUpgrade = (q: http.IncomingMessage, sock: import('node:stream').Duplex) => {
    hits.push(`UPGRADE ${q.url} auth=${q.headers.authorization ?? ''}`);
    sock.destroy();
  };
  const plain = http.createServer(onReq).on('upgrade', onUpgrade);
  const secure = https.createServer(tlsPair, onReq).on('upgrade', onUpgrade);
  // Even a bare TCP connection counts: the connector must not dial it at all.
  plain.on('connection', () => hits.push('tcp ws'));
  secure.on('connection', () => hits.push('tcp wss'));
  await Promise.all([plain, secure].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))));
  return {
    wsUrl: `ws://127.0.0.1:${(plain.address() as AddressInfo).port}`,
    wssUrl: `wss://127.0.0.1:${(secure.address() as AddressInfo).port}`,
    hits,
    close: async () => {
      for (const s of [plain, secure]) {
        s.closeAllConnections();
        await new Promise((r) => s.close(r));
      }
    },
  };
}

type Mode = 'unsigned' | 'wrong-key' | 'ws-downgrade' | 'replayed-old';

/** The lying control API (https, with a certificate the connector trusts): serves a relay list per `mode`. */
async function startLiar(tlsPair: { cert: Buffer; key: Buffer }, list: (served: number) => { relays: unknown[]; signed?: string }) {
  let served = 0;
  const server = https.createServer(tlsPair, (q, s) => {
    if (q.url !== '/v1/relays') return void s.writeHead(404).end();
    served++;
    s.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(list(served)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    served: () => served,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

describe.skipIf(missing !== null)('discovery trust: a relay list the fleet did not sign is never followed', () => {
  const tmp = tempDir();
  let ca: Ca;
  let caPem: Buffer;
  let leaf: { cert: string; key: string };
  let tlsPair: { cert: Buffer; key: Buffer };
  const store = `file:${path.join(tmp.dir, 'store')}`;
  const keysFile = path.join(tmp.dir, 'fleet-key.json');
  let origin: Origin;
  let recorder: Recorder;

  beforeAll(async () => {
    mkdirSync(path.join(tmp.dir, 'ca'));
    ca = makeCa(path.join(tmp.dir, 'ca'));
    caPem = readFileSync(ca.cert);
    leaf = issueCert(ca, path.join(tmp.dir, 'relay'), { names: ['trust.test'] });
    tlsPair = { cert: readFileSync(leaf.cert), key: readFileSync(leaf.key) };
    generateKeyFile(keysFile);
    origin = await startOrigin((q, s) => s.end(`trusted ${q.url}`));
    // The recorder's certificate is as good as the relays' (same CA): only the list's signature can keep it out.
    recorder = await startRecorder(tlsPair);
  }, 30_000);
  afterAll(async () => {
    await stopAll();
    await origin?.close();
    await recorder?.close();
    tmp.cleanup();
  });

  const fleetSigned = (relays: RelayListClaims['relays'], iat: number) =>
    ({ relays, signed: signToken(TokenKind.RelayList, { relays, iat, exp: Math.floor(Date.now() / 1000) + 60 } satisfies RelayListClaims, loadKeyFile(keysFile).secretKey) });
  const realEntries = (real: RelayProc[]) => real.map((r) => ({ id: r.id, connectUrl: `wss://127.0.0.1:${r.connect}`, controlUrl: `https://127.0.0.1:${r.control}`, draining: !r.proc.running }));
  const lists: Record<Mode, (real: RelayProc[], liarUrl: string, served: number) => { relays: unknown[]; signed?: string }> = {
    unsigned: (_real, liarUrl) => ({ relays: [{ id: 'evil', connectUrl: recorder.wssUrl, controlUrl: liarUrl, draining: false }] }),
    'wrong-key': (_real, liarUrl) => {
      const relays = [{ id: 'evil', connectUrl: recorder.wssUrl, controlUrl: liarUrl, draining: false }];
      const now = Math.floor(Date.now() / 1000);
      const claims: RelayListClaims = { relays, iat: now, exp: now + 60 };
      return { relays, signed: signToken(TokenKind.RelayList, claims, generateSigningKeyPair().secretKey) };
    },
    // Signed with the real fleet key (an old relay, a misconfigured one): the ws:// entry is still never followed from wss://.
    'ws-downgrade': (real, liarUrl) => fleetSigned([{ id: 'evil', connectUrl: recorder.wsUrl, controlUrl: liarUrl, draining: false }, ...realEntries(real)], Math.floor(Date.now() / 1000)),
    // A genuine list from when the recorder was (say) a fleet member, replayed after a newer one: still within its validity, but older.
    'replayed-old': (real, liarUrl, served) =>
      served <= 1
        ? fleetSigned(realEntries(real), Math.floor(Date.now() / 1000))
        : fleetSigned([{ id: 'evil', connectUrl: recorder.wssUrl, controlUrl: liarUrl, draining: false }], Math.floor(Date.now() / 1000) - 100),
  };

  it.each(['unsigned', 'wrong-key', 'ws-downgrade', 'replayed-old'] as const)(
    'list %s: the token never reaches the recorder, serving continues, and a relay drain moves connections only to real relays',
    async (mode) => {
      const tlsArgs = ['--tls-cert', leaf.cert, '--tls-key', leaf.key, '--tls-ca', ca.cert, '--https', '127.0.0.1:0'];
      const r1 = await startRelay({ dir: tmp.dir, store, keys: keysFile, id: `r1-${mode}`, extraArgs: tlsArgs });
      const r2 = await startRelay({ dir: tmp.dir, store, keys: keysFile, id: `r2-${mode}`, extraArgs: tlsArgs });
      const real = [r1, r2];
      const liar = await startLiar(tlsPair, (served) => lists[mode](real, liar.url, served));
      const relayUrls = real.map((r) => `wss://127.0.0.1:${r.connect}`);
      const token = await createTunnel({ dir: tmp.dir, store, keys: keysFile, name: 'trust', hostnames: ['trust.test'], relays: relayUrls });
      expect(typeof peekClaims(token)?.fleetKey).toBe('string');
      // The credentials file names the liar as its control API (asked first); the token names a real relay's.
      const credFile = path.join(tmp.dir, `creds-${mode}.json`);
      writeFileSync(credFile, JSON.stringify({ accountId: 'a', tunnelId: String(peekClaims(token)!.tunnelId), tunnelName: 'trust', token, relays: relayUrls, controlUrl: liar.url }));
      const connector = new Proc(`connector-${mode}`, process.execPath, [
        CONNECTOR_CLI, 'run', '--credentials-file', credFile, '--url', origin.url, '--ha-connections', '2', '--ca-file', ca.cert,
        '--discovery-interval', '200ms', '--log-format', 'json', '--loglevel', 'debug', '--grace-period', '2s', '--metrics', '127.0.0.1:0',
      ], { TUNNEL_TOKEN: '' });
      await waitFor(() => connector.countLogs((l) => l.event === 'registered') >= 2 || !connector.running, 15_000, { message: 'connector registered twice' });
      expect(connector.running).toBe(true);
      // Several polls of the liar: an unverifiable list is warned about once, then ignored quietly.
      await waitFor(() => liar.served() >= 5, 15_000, { message: 'liar asked five times' });
      const refusals = connector.logs.filter((l) => l.event === 'relay-list-refused' && l.level === 40);
      if (mode === 'ws-downgrade') expect(refusals).toHaveLength(0);
      else {
        expect(refusals).toHaveLength(1);
        expect(refusals[0]!.reason).toBe({ unsigned: 'unsigned', 'wrong-key': 'bad-signature', 'replayed-old': 'stale' }[mode]);
      }

      // Routine drain of relay 1: its connection moves, to relay 2.
      const dispatcher = new Agent({ connect: { ca: caPem, servername: 'trust.test' } });
      const httpsPort = (r: RelayProc) => (r.proc.logs.find((l) => l.event === 'listening')!.ports as { https: number }).https;
      const movedBefore = connector.countLogs((l) => l.event === 'registered');
      await r1.proc.stop(15_000);
      await waitFor(() => connector.countLogs((l) => l.event === 'registered') > movedBefore, 15_000, { message: 'connection moved after the drain' });
      const registeredOn = connector.logs.filter((l) => l.event === 'registered').map((l) => String(l.relay));
      expect(new Set(registeredOn)).toEqual(new Set(relayUrls));
      const r = await req(`https://127.0.0.1:${httpsPort(r2)}/after-drain`, { host: 'trust.test', dispatcher });
      expect(r.status).toBe(200);
      expect(r.text).toBe('trusted /after-drain');
      // More polls after the drain, still nothing toward the recorder.
      const servedNow = liar.served();
      await waitFor(() => liar.served() >= servedNow + 3, 10_000, { message: 'liar asked again after the drain' });
      expect(connector.logs.filter((l) => l.event === 'dial').map((l) => String(l.relay)).filter((u) => !relayUrls.includes(u))).toEqual([]);
      expect(recorder.hits).toEqual([]);
      // /metrics counts every refused list (logged once) and the real lists followed.
      const metricsPort = (connector.logs.find((l) => l.event === 'metrics')!.port as number);
      const fams = parsePromText((await req(`http://127.0.0.1:${metricsPort}/metrics`)).text);
      const refusedAs = { unsigned: 'unsigned', 'wrong-key': 'bad-signature', 'replayed-old': 'stale', 'ws-downgrade': null }[mode];
      if (refusedAs) expect(sumOf(fams, 'tunnel_relay_lists_total', { result: refusedAs })).toBeGreaterThanOrEqual(5);
      expect(sumOf(fams, 'tunnel_relay_lists_total', { result: 'followed' })).toBeGreaterThanOrEqual(1);
      await dispatcher.close();
      await connector.stop();
      await r2.proc.stop();
      await liar.close();
    },
    90_000,
  );

  it('a token issued before signed lists (no fleet key) still runs on the relays it names with discovery off; --fleet-key turns discovery back on', async () => {
    const tlsArgs = ['--tls-cert', leaf.cert, '--tls-key', leaf.key, '--tls-ca', ca.cert, '--https', '127.0.0.1:0'];
    const r1 = await startRelay({ dir: tmp.dir, store, keys: keysFile, id: 'old-1', extraArgs: tlsArgs });
    const r2 = await startRelay({ dir: tmp.dir, store, keys: keysFile, id: 'old-2', extraArgs: tlsArgs });
    const liar = await startLiar(tlsPair, (served) => lists.unsigned([r1, r2], liar.url, served));
    const relayUrls = [r1, r2].map((r) => `wss://127.0.0.1:${r.connect}`);
    const fresh = peekClaims(await createTunnel({ dir: tmp.dir, store, keys: keysFile, name: 'trust', hostnames: ['trust.test'], relays: relayUrls }))!;
    const { kind: _kind, fleetKey, ...claims } = fresh;
    expect(typeof fleetKey).toBe('string');
    // The old shape: same claims, no fleetKey; its control URL is the liar's.
    const old = signToken(TokenKind.Tunnel, { ...claims, controlUrl: liar.url }, loadKeyFile(keysFile).secretKey);
    const args = ['--ca-file', ca.cert, '--discovery-interval', '200ms', '--grace-period', '2s'];
    const plain = await startConnector({ token: old, relays: [], url: origin.url, ha: 2, extraArgs: args });
    expect(plain.countLogs((l) => l.event === 'discovery-off' && l.level === 40)).toBe(1);
    const keyed = await startConnector({ token: old, relays: [], url: origin.url, ha: 2, extraArgs: [...args, '--fleet-key', String(fleetKey)] });
    await keyed.waitForLog((l) => l.event === 'relay-list-refused' && l.reason === 'unsigned', 10_000);
    expect(keyed.countLogs((l) => l.event === 'discovery-off')).toBe(0);
    const before = [plain, keyed].map((c) => c.countLogs((l) => l.event === 'registered'));
    await r1.proc.stop(15_000);
    await waitFor(() => [plain, keyed].every((c, i) => c.countLogs((l) => l.event === 'registered') > before[i]!), 15_000, { message: 'both connectors moved after the drain' });
    const dispatcher = new Agent({ connect: { ca: caPem, servername: 'trust.test' } });
    const r = await req(`https://127.0.0.1:${(r2.proc.logs.find((l) => l.event === 'listening')!.ports as { https: number }).https}/old`, { host: 'trust.test', dispatcher });
    await dispatcher.close();
    expect(r.text).toBe('trusted /old');
    for (const c of [plain, keyed]) expect(c.logs.filter((l) => l.event === 'dial').every((l) => relayUrls.includes(String(l.relay)))).toBe(true);
    expect(recorder.hits).toEqual([]);
    await Promise.all([plain.stop(), keyed.stop(), r2.proc.stop()]);
    await liar.close();
  }, 90_000);
});
