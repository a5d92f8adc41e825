import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as path from 'node:path';
import http from 'node:http';
import https from 'node:https';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { generateSigningKeyPair, signToken, RELAY_DESCRIPTION_KIND, RELAY_DESCRIPTION_PATH, TokenKind } from '@tunnel/protocol';
import { CONNECTOR_CLI, runCli, tempDir } from '../harness/procs.js';
import { issueCert, makeCa, opensslMissing } from '../harness/certs.js';

// A relay URL the user typed may reach anything: a stranger's server, a man
// in the middle, a relay of another fleet. The description it serves is read
// with a size cap and a schema check, and only claims signed by the fleet key
// are used; a credential that already names a fleet key pins it.

const missing = opensslMissing('relay description over TLS');

interface Describer {
  url: string;
  close(): void;
}

function serve(handler: http.RequestListener, tls?: { cert: string; key: string }): Promise<Describer> {
  const server = tls ? https.createServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, handler) : http.createServer(handler);
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as AddressInfo).port;
      resolve({ url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`, close: () => {
          server.closeAllConnections();
          server.close();
        },
      });
    }),
  );
}

const json = (body: unknown) => (_q: http.IncomingMessage, s: http.ServerResponse) => {
  s.writeHead(200, { 'content-type': 'application/json' });
  s.end(JSON.stringify(body));
};

type Claims = { relayId: string; region: string; connect: string[]; control: string | null; public: string | null };
function description(signWith: string, fleetKey: string, claims: Claims, ttlSeconds = 600) {
  const now = Math.floor(Date.now() / 1000);
  return { tunnelRelay: 1, ...claims, fleetKey, signed: signToken(RELAY_DESCRIPTION_KIND, { ...claims, iat: now - 5, exp: now + ttlSeconds }, signWith), answeredBy: 'control' };
}

describe('a hostile /.well-known/tunnel-relay', () => {
  const tmp = tempDir();
  const fleetA = generateSigningKeyPair();
  const fleetB = generateSigningKeyPair();
  const claims: Claims = { relayId: 'evil', region: 'x', connect: ['ws://127.0.0.1:9'], control: 'http://127.0.0.1:9', public: null };
  const servers: Describer[] = [];
  const start = async (h: http.RequestListener, tls?: { cert: string; key: string }) => {
    const d = await serve(h, tls);
    servers.push(d);
    return d;
  };
  const login = (relay: string, home: string, extra: string[] = []) => runCli(CONNECTOR_CLI, ['login', '--relay', relay, '--enroll', 'x', ...extra], { TUNNEL_HOME: home }, undefined, 20_000);
  /** A TUNNEL_HOME logged in to fleet A (the credential names fleet A's key). */
  const homeOfFleetA = (name: string) => {
    const home = path.join(tmp.dir, name);
    mkdirSync(home, { recursive: true, mode: 0o700 });
    const now = Math.floor(Date.now() / 1000);
    const credential = signToken(TokenKind.Account, { jti: 'j', accountId: 'a', accountName: 'alice', controlUrl: 'http://127.0.0.1:9', fleetKey: fleetA.publicKey, iat: now, exp: now + 3600 }, fleetA.secretKey);
    writeFileSync(path.join(home, 'cert.json'), JSON.stringify({ accountId: 'a', accountName: 'alice', controlUrl: 'http://127.0.0.1:9', credential }), { mode: 0o600 });
    return home;
  };

  beforeAll(() => mkdirSync(tmp.dir, { recursive: true }));
  afterAll(() => {
    for (const s of servers) s.close();
    tmp.cleanup();
  });

  it('a body past 16 KiB (streamed without end) is refused at the cap, not read to the end', async () => {
    let sent = 0;
    let sentAtClose = -1;
    const d = await start((_q, s) => {
      s.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(4096, 0x20);
      // Bounded: 4 MiB at most, far past the cap; the client hangs up long before.
      const pump = () => {
        while (sent < 4 * 1024 * 1024 && s.write(chunk)) sent += chunk.length;
        if (sent < 4 * 1024 * 1024) s.once('drain', pump);
      };
      s.on('close', () => {
        sentAtClose = sent;
        sent = Infinity;
      });
      pump();
    });
    const r = await login(d.url, path.join(tmp.dir, 'h-big'));
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`tunnel: ${d.url} is not a tunnel relay: GET ${RELAY_DESCRIPTION_PATH} answered HTTP 200 with more than 16 KiB (not_a_relay)\n`);
    // The client hung up early (what was queued in socket buffers aside), not after 4 MiB.
    expect(sentAtClose).toBeGreaterThan(0);
    expect(sentAtClose).toBeLessThan(4 * 1024 * 1024);
  });

  it('JSON of another shape is not a relay description', async () => {
    const d = await start(json({ tunnelRelay: 2, connect: 'ws://x' }));
    const r = await login(d.url, path.join(tmp.dir, 'h-shape'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is not a tunnel relay: GET \/\.well-known\/tunnel-relay answered JSON that is not a relay description \(tunnelRelay: .*\) \(not_a_relay\)\n$/);
  });

  it('claims that do not verify with the key the document names are refused', async () => {
    const d = await start(json(description(fleetB.secretKey, fleetA.publicKey, claims)));
    const r = await login(d.url, path.join(tmp.dir, 'h-forged'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^tunnel: the relay description at http:\/\/127\.0\.0\.1:\d+ is not signed by its fleet key: BAD_SIGNATURE: .* \(bad_relay_description\)\n$/);
  });

  it('signed claims with endpoints that are not URLs of their kind are refused', async () => {
    const d = await start(json(description(fleetA.secretKey, fleetA.publicKey, { ...claims, connect: ['javascript:alert(1)'] })));
    const r = await login(d.url, path.join(tmp.dir, 'h-badurl'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is malformed \(connect\.0: expected a ws:\/\/ or wss:\/\/ URL\) \(bad_relay_description\)\n$/);
  });

  it('an expired description (a replay of an old one) is refused', async () => {
    const d = await start(json(description(fleetA.secretKey, fleetA.publicKey, claims, -60)));
    const r = await login(d.url, path.join(tmp.dir, 'h-expired'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is not signed by its fleet key: it has expired/);
  });

  it('a credential pins its fleet: a relay of another fleet is refused by login --refresh and run', async () => {
    const d = await start(json(description(fleetB.secretKey, fleetB.publicKey, claims)));
    const home = homeOfFleetA('h-pinned');
    const refresh = await runCli(CONNECTOR_CLI, ['login', '--relay', d.url, '--refresh'], { TUNNEL_HOME: home });
    expect(refresh.code).toBe(1);
    expect(refresh.stderr).toBe(`tunnel: the relay at ${d.url} belongs to another fleet: its fleet key is ${fleetB.publicKey}, your credential's is ${fleetA.publicKey} (other_fleet)\n`);
    // The same document echoing fleet A's key, but signed by B: the pinned key decides.
    const echo = await start(json(description(fleetB.secretKey, fleetA.publicKey, claims)));
    const now = Math.floor(Date.now() / 1000);
    const token = signToken(TokenKind.Tunnel, { jti: 't', accountId: 'a', tunnelId: 'tid', tunnelName: 'n', relays: [], fleetKey: fleetA.publicKey, iat: now, exp: now + 3600 }, fleetA.secretKey);
    const run = await runCli(CONNECTOR_CLI, ['run', '--url', 'http://127.0.0.1:9', '--relay', echo.url], { TUNNEL_TOKEN: token });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^tunnel: the relay description at http:\/\/127\.0\.0\.1:\d+ is not signed by its fleet key: BAD_SIGNATURE/);
    const other = await runCli(CONNECTOR_CLI, ['run', '--url', 'http://127.0.0.1:9', '--relay', d.url], { TUNNEL_TOKEN: token });
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/belongs to another fleet: .*\(other_fleet\)\n$/);
  });

  it.skipIf(!!missing)('reached over TLS, a description naming plain ws:// or http:// endpoints for credentials is refused', async () => {
    const ca = makeCa(tmp.dir, 'Describer CA');
    const leaf = issueCert(ca, path.join(tmp.dir, 'describer'));
    const d = await start(json(description(fleetA.secretKey, fleetA.publicKey, { ...claims, answeredBy: undefined } as Claims)), leaf);
    const r = await login(d.url, path.join(tmp.dir, 'h-downgrade'), ['--ca-file', ca.cert]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/was reached over TLS but names plain-text endpoints for credentials \(ws:\/\/127\.0\.0\.1:9, http:\/\/127\.0\.0\.1:9\): refused \(bad_relay_description\)\n$/);
  });
});
