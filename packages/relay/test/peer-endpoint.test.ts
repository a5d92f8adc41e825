// The receiving side of peer forwarding, through its public behaviour: a real
// PeerDispatch (the forwarding relay) signs requests to a real peer endpoint
// (createPeerServer over a real RouteTable and file store), through a wire
// that can tamper with them on the way. Whatever the signature scheme:
//  - a request signed by this fleet is accepted (holding no connection, the
//    peer answers 530 tunnel_offline, not 403);
//  - unsigned, signed by another fleet, or altered after signing (path,
//    host, method, signature): refused with 403 peer_refused;
//  - an accepted request is served from the peer's own connections only: it
//    is never forwarded a second time (the endpoint takes a LocalDispatch only).
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pino } from 'pino';
import { request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { PeerDispatch } from '../src/fleet/peer-dispatch.js';
import { createPeerServer } from '../src/fleet/peer-endpoint.js';
import { LocalDispatch } from '../src/edge/local-dispatch.js';
import { ErrorAnswers } from '../src/edge/error-page.js';
import { publicExchange } from '../src/edge/exchange.js';
import { PeerAuth } from '../src/fleet/peer-auth.js';
import { MemoryReplayCache } from '../src/fleet/replay-cache.js';
import { RouteTable } from '../src/edge/route-table.js';
import { TunnelConnections } from '../src/connectors/tunnel-connections.js';
import { openStore } from '../src/store/open.js';
import type { FleetView } from '../src/fleet/fleet-view.js';
import type { Route, Store } from '../src/store/types.js';

const FLEET_SECRET = 'fleet-secret-for-peer-endpoint-tests';
const OTHER_SECRET = 'another-fleets-secret-entirely';
const silent = pino({ level: 'silent' });

interface Seen {
  status: number;
  code: string | undefined;
}
type Tamper = (h: { method: string; path: string; headers: Array<[string, string]> }) => void;

const servers: http.Server[] = [];
function listen(handler: http.RequestListener): Promise<string> {
  const server = http.createServer(handler);
  servers.push(server);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'content-length', 'host']);

describe('peer endpoint: signed requests only, never forwarded twice', () => {
  let dir: string;
  let store: Store;
  let routes: RouteTable;
  let route: Route;
  let peerUrl: string;
  let wireUrl: string;
  const seen: Seen[] = [];
  let tamper: Tamper | null = null;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'tunnel-peer-'));
    store = await openStore(`file:${dir}`, { watch: true });
    const acct = await store.createAccount('alice');
    const t = await store.createTunnel(acct.id, 'app');
    route = await store.addRoute({ hostname: 'app.test', tunnelId: t.id, accountId: acct.id });
    await store.addRoute({ hostname: 'other.test', tunnelId: t.id, accountId: acct.id });
    routes = new RouteTable(store);
    await routes.load();
    // This peer holds no connection for the tunnel. The endpoint takes this
    // relay's own connections (a LocalDispatch) and nothing else, so a
    // forwarded request cannot be forwarded again: there is no way to hand it
    // a forwarder. A second forward would show up on the wire below.
    const local = new LocalDispatch(new TunnelConnections(), silent, {}, new ErrorAnswers(silent, {}));
    const peer = createPeerServer({ routes, local, auth: new PeerAuth(FLEET_SECRET, new MemoryReplayCache()), log: silent, hooks: {} });
    servers.push(peer);
    peerUrl = await new Promise<string>((resolve) => peer.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(peer.address() as AddressInfo).port}`)));
    // The wire between the relays: passes each request on (maybe altered) and records the peer's answer.
    wireUrl = await listen(async (req, res) => {
      const headers: Array<[string, string]> = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) if (!HOP.has(req.rawHeaders[i]!.toLowerCase())) headers.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
      const h = { method: req.method ?? 'GET', path: req.url ?? '/', headers: [['host', req.headers.host ?? ''] as [string, string], ...headers] };
      tamper?.(h);
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const r = await request(peerUrl + h.path, { method: h.method as 'GET', headers: h.headers.flat(), body: chunks.length ? Buffer.concat(chunks) : undefined });
      const body = await r.body.text();
      const code = r.headers['tunnel-error'];
      seen.push({ status: r.statusCode, code: typeof code === 'string' ? code : undefined });
      res.writeHead(r.statusCode, { 'content-type': 'text/plain', ...(typeof code === 'string' ? { 'tunnel-error': code, 'tunnel-error-source': 'relay' } : {}) });
      res.end(body);
    });
  });
  beforeEach(() => {
    seen.length = 0;
    tamper = null;
  });
  afterAll(async () => {
    for (const s of servers.splice(0)) {
      const closed = new Promise((r) => s.close(r));
      s.closeAllConnections();
      await closed;
    }
    routes?.close();
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A forwarding relay of the fleet whose secret is `secret`, forwarding everything to the peer over the wire. */
  async function forwardingRelay(secret: string): Promise<string> {
    const fleet = { peersFor: () => [{ id: 'peer-b', peerUrl: wireUrl }] } as unknown as FleetView;
    const fwd = new PeerDispatch({ selfId: 'relay-a', auth: new PeerAuth(secret, new MemoryReplayCache()), fleet, log: silent, local: { serve: () => false, upgrade: () => false } });
    return listen((req, res) => {
      if (!fwd.serve(publicExchange(req, route, 'http', `req-${Math.random().toString(36).slice(2)}`, process.hrtime.bigint()), res)) res.writeHead(599).end();
    });
  }
  const send = async (url: string, o: { method?: string; path?: string; host?: string; body?: string } = {}) => {
    const r = await request(url + (o.path ?? '/x'), { method: (o.method ?? 'GET') as 'GET', headers: { host: o.host ?? 'app.test' }, body: o.body });
    await r.body.dump();
    return r.statusCode;
  };

  it('a request signed by this fleet is accepted, and served from local connections only: never forwarded again', async () => {
    const a = await forwardingRelay(FLEET_SECRET);
    expect(await send(a, { path: '/one' })).toBe(530);
    expect(await send(a, { method: 'POST', path: '/two', body: 'payload' })).toBe(530);
    expect(seen).toEqual([
      { status: 530, code: 'tunnel_offline' },
      { status: 530, code: 'tunnel_offline' },
    ]);
  });

  it('a request signed by another fleet is refused', async () => {
    const a = await forwardingRelay(OTHER_SECRET);
    await send(a);
    expect(seen).toEqual([{ status: 403, code: 'peer_refused' }]);
  });

  it('a request altered after signing is refused: path, host, method, or the signature itself', async () => {
    const a = await forwardingRelay(FLEET_SECRET);
    const alterations: Array<[string, Tamper]> = [
      ['path', (h) => void (h.path = '/admin')],
      ['query', (h) => void (h.path = `${h.path}?extra=1`)],
      ['host', (h) => void (h.headers[0]![1] = 'other.test')],
      ['method', (h) => void (h.method = 'DELETE')],
      [
        'signature',
        (h) => {
          for (const p of h.headers) {
            if (/signature/i.test(p[0])) p[1] = p[1].slice(0, -2) + (p[1].endsWith('AA') ? 'BB' : 'AA');
          }
        },
      ],
      ['peer headers stripped', (h) => void (h.headers = h.headers.filter(([k]) => !/^tunnel-peer-/i.test(k)))],
    ];
    for (const [what, t] of alterations) {
      seen.length = 0;
      tamper = t;
      await send(a, { path: '/x' });
      expect(seen, what).toEqual([{ status: 403, code: 'peer_refused' }]);
    }
  });

  it('a plain request to the peer endpoint (no peer headers at all) is refused', async () => {
    const r = await request(`${peerUrl}/x`, { headers: { host: 'app.test' } });
    await r.body.dump();
    expect(r.statusCode).toBe(403);
    expect(r.headers['tunnel-error']).toBe('peer_refused');
  });
});
