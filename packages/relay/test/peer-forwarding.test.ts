// The forwarding relay's side of peer forwarding, against real HTTP servers
// on 127.0.0.1 standing in for peer relays: a peer that turns a forwarded
// request away (its connection just left, or it is draining) is not the
// client's problem when the request can be sent elsewhere.
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { connect, createServer, type AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { request } from 'undici';
import { PeerDispatch } from '../src/fleet/peer-dispatch.js';
import { publicExchange, type Dispatch } from '../src/edge/exchange.js';
import { PeerAuth } from '../src/fleet/peer-auth.js';
import { MemoryReplayCache } from '../src/fleet/replay-cache.js';
import type { FleetView } from '../src/fleet/fleet-view.js';
import type { Route } from '../src/store/types.js';

const route: Route = { hostname: 'app.test', tunnelId: 't1', accountId: 'a1', createdAt: 0 };
const servers: http.Server[] = [];

function listen(handler: http.RequestListener): Promise<{ url: string; server: http.Server }> {
  const server = http.createServer(handler);
  servers.push(server);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server })));
}

function readAll(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let s = '';
    req.setEncoding('utf8').on('data', (d: string) => (s += d));
    req.on('end', () => resolve(s));
  });
}

/** A peer that answers as a relay holding no usable connection does. */
function refusingPeer(seen: string[], code = 'tunnel_offline', source = 'relay', status = 530) {
  return listen(async (req, res) => {
    seen.push(`${req.method} ${await readAll(req)}`);
    res.writeHead(status, { 'tunnel-error': code, 'tunnel-error-source': source, 'content-type': 'text/plain' });
    res.end(`${status} ${code}`);
  });
}

function servingPeer(name: string, seen: string[]) {
  return listen(async (req, res) => {
    const body = await readAll(req);
    seen.push(`${req.method} ${body}`);
    res.end(`${name}:${req.method}:${body}`);
  });
}

/** A public listener that forwards everything to `peers`, in that order. */
async function forwarding(peers: Array<{ id: string; url: string }>, local?: (body: Buffer, res: http.ServerResponse) => boolean) {
  const fleet = { peersFor: () => peers.map((p) => ({ id: p.id, peerUrl: p.url })) } as unknown as FleetView;
  const fwd = peerDispatch(fleet, {
    serve: (ex, res) => (local && ex.body.kind === 'buffered' ? local(ex.body.bytes, res) : false),
    upgrade: () => false,
  });
  const pub = await listen((req, res) => {
    if (!fwd.serve(publicExchange(req, route, 'http', 'req-1', process.hrtime.bigint()), res)) res.writeHead(599).end();
  });
  return pub.url;
}

/** No connection of the tunnel here, unless a test says otherwise. */
const NO_LOCAL: Dispatch = { serve: () => false, upgrade: () => false };

function peerDispatch(fleet: FleetView, local: Dispatch = NO_LOCAL): PeerDispatch {
  return new PeerDispatch({ selfId: 'relay-self', auth: new PeerAuth('fleet-secret-for-tests', new MemoryReplayCache()), fleet, log: pino({ level: 'silent' }), local });
}

afterEach(async () => {
  for (const s of servers.splice(0)) {
    const closed = new Promise((r) => s.close(r));
    s.closeAllConnections(); // keep-alive sockets from the forwarder's pool and the client
    await closed;
  }
});

describe('peer forwarding: a peer that turns the request away', () => {
  it('a POST with a small body goes on to the next holder, body intact', async () => {
    const refused: string[] = [];
    const served: string[] = [];
    const a = await refusingPeer(refused);
    const b = await servingPeer('b', served);
    const url = await forwarding([{ id: 'a', url: a.url }, { id: 'b', url: b.url }]);
    const r = await request(`${url}/x`, { method: 'POST', body: 'payload-1', headers: { 'content-length': '9' } });
    expect(r.statusCode).toBe(200);
    expect(await r.body.text()).toBe('b:POST:payload-1');
    expect(refused).toEqual(['POST payload-1']);
    expect(served).toEqual(['POST payload-1']);
  });

  it('a connection that arrived here meanwhile is preferred to the next peer', async () => {
    const served: string[] = [];
    const a = await refusingPeer([]);
    const b = await servingPeer('b', served);
    const url = await forwarding([{ id: 'a', url: a.url }, { id: 'b', url: b.url }], (body, res) => {
      res.end(`local:${body.toString()}`);
      return true;
    });
    const r = await request(`${url}/x`, { method: 'GET' });
    expect(await r.body.text()).toBe('local:');
    expect(served).toEqual([]);
  });

  it('a POST to a peer that is gone (connection refused: nothing was sent) goes on to the next holder, body intact', async () => {
    // A relay killed with -9 stays in the fleet view until its presence expires.
    // Port 9 (discard), privileged and never bound by a test: a port freed by
    // closing a server could be taken by a parallel test file's listener.
    const deadUrl = 'http://127.0.0.1:9';
    const served: string[] = [];
    const b = await servingPeer('b', served);
    const url = await forwarding([{ id: 'dead', url: deadUrl }, { id: 'b', url: b.url }]);
    const r = await request(`${url}/x`, { method: 'POST', body: 'payload-2', headers: { 'content-length': '9' } });
    expect(r.statusCode).toBe(200);
    expect(await r.body.text()).toBe('b:POST:payload-2');
    expect(served).toEqual(['POST payload-2']);
  });

  it('a POST to a peer that resets the connection as it opens (stopping, with it in its listen backlog) goes on to the next holder', async () => {
    // Seen in a rolling restart: `connect ECONNRESET` from a relay that had just
    // drained. The reset comes before the connection is open: nothing was sent.
    const resetting = createServer((s) => s.resetAndDestroy());
    await new Promise<void>((r) => resetting.listen(0, '127.0.0.1', r));
    try {
      const served: string[] = [];
      const b = await servingPeer('b', served);
      const url = await forwarding([{ id: 'stopping', url: `http://127.0.0.1:${(resetting.address() as AddressInfo).port}` }, { id: 'b', url: b.url }]);
      const r = await request(`${url}/x`, { method: 'POST', body: 'payload-3', headers: { 'content-length': '9' } });
      expect(r.statusCode).toBe(200);
      expect(await r.body.text()).toBe('b:POST:payload-3');
      expect(served).toEqual(['POST payload-3']);
    } finally {
      await new Promise((r) => resetting.close(r));
    }
  });

  it('with nowhere else to go the client gets a 530 tunnel_offline from this relay', async () => {
    const a = await refusingPeer([]);
    const url = await forwarding([{ id: 'a', url: a.url }]);
    const r = await request(`${url}/x`, { method: 'POST', body: 'p', headers: { 'content-length': '1', accept: 'application/json' } });
    expect(r.statusCode).toBe(530);
    expect(r.headers['tunnel-error']).toBe('tunnel_offline');
    expect(r.headers['tunnel-request-id']).toBe('req-1');
    await r.body.dump();
  });

  it("the origin's or connector's own 503 is the answer, not a reason to retry", async () => {
    const served: string[] = [];
    const a = await refusingPeer([], 'origin_unavailable', 'origin', 503);
    const b = await servingPeer('b', served);
    const url = await forwarding([{ id: 'a', url: a.url }, { id: 'b', url: b.url }]);
    const r = await request(`${url}/x`);
    expect(r.statusCode).toBe(503);
    expect(r.headers['tunnel-error']).toBe('origin_unavailable');
    await r.body.dump();
    expect(served).toEqual([]);
  });

  it('a streamed (chunked) body is not held back, so it is not retried either', async () => {
    const served: string[] = [];
    const a = await refusingPeer([]);
    const b = await servingPeer('b', served);
    const url = await forwarding([{ id: 'a', url: a.url }, { id: 'b', url: b.url }]);
    const r = await request(`${url}/x`, { method: 'POST', body: Readable.from([Buffer.from('chunk')]) });
    expect(r.statusCode).toBe(530);
    await r.body.dump();
    expect(served).toEqual([]);
  });
});

describe('peer forwarding of upgrades: a refusing peer', () => {
  /** A peer whose upgrade answer is a relay refusal, or a 101 that echoes. */
  const upgradePeer = async (refuse: boolean, seen: string[]) => {
    const p = await listen((_req, res) => res.writeHead(400).end());
    p.server.on('upgrade', (req, socket) => {
      seen.push(req.url ?? '');
      if (refuse) {
        socket.end('HTTP/1.1 530 Tunnel Offline\r\nTunnel-Error: tunnel_offline\r\nTunnel-Error-Source: relay\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        return;
      }
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: tunnel-tcp\r\nConnection: Upgrade\r\n\r\n');
      socket.pipe(socket);
    });
    return p;
  };

  const dialUpgrade = (url: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const u = new URL(url);
      const s = connect(Number(u.port), '127.0.0.1');
      let got = '';
      s.setEncoding('latin1');
      s.on('data', (d: string) => {
        got += d;
        if (got.includes('\r\n\r\n') && got.startsWith('HTTP/1.1 101') && !got.endsWith('ping')) s.write('ping');
        if (got.endsWith('ping') || (got.includes('\r\n\r\n') && !got.startsWith('HTTP/1.1 101'))) {
          s.destroy();
          resolve(got);
        }
      });
      s.on('error', reject);
      s.write('GET /u HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: tunnel-tcp\r\n\r\n');
    });

  it('goes on to the next holder, and the upgraded stream flows', async () => {
    const refused: string[] = [];
    const served: string[] = [];
    const a = await upgradePeer(true, refused);
    const b = await upgradePeer(false, served);
    const fleet = { peersFor: () => [{ id: 'a', peerUrl: a.url }, { id: 'b', peerUrl: b.url }] } as unknown as FleetView;
    const fwd = peerDispatch(fleet);
    const pub = await listen((_req, res) => res.writeHead(400).end());
    pub.server.on('upgrade', (req, socket, head) => {
      if (!fwd.upgrade(publicExchange(req, route, 'websocket', 'req-u', process.hrtime.bigint()), socket, head)) socket.destroy();
    });
    const got = await dialUpgrade(pub.url);
    expect(got.startsWith('HTTP/1.1 101')).toBe(true);
    expect(got.endsWith('ping')).toBe(true);
    expect(refused).toEqual(['/u']);
    expect(served).toEqual(['/u']);
  });

  it('a connection that arrived here meanwhile is preferred to the next peer', async () => {
    const served: string[] = [];
    const a = await upgradePeer(true, []);
    const b = await upgradePeer(false, served);
    const fleet = { peersFor: () => [{ id: 'a', peerUrl: a.url }, { id: 'b', peerUrl: b.url }] } as unknown as FleetView;
    let local = 0;
    const fwd = peerDispatch(fleet, {
      serve: () => false,
      upgrade: (_ex, socket) => {
        local++;
        socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: tunnel-tcp\r\nConnection: Upgrade\r\n\r\n');
        socket.pipe(socket);
        return true;
      },
    });
    const pub = await listen((_req, res) => res.writeHead(400).end());
    pub.server.on('upgrade', (req, socket, head) => {
      if (!fwd.upgrade(publicExchange(req, route, 'websocket', 'req-u', process.hrtime.bigint()), socket, head)) socket.destroy();
    });
    const got = await dialUpgrade(pub.url);
    expect(got.endsWith('ping')).toBe(true);
    expect(local).toBe(1);
    expect(served).toEqual([]);
  });

  it('with nowhere else to go, the client gets 530 tunnel_offline', async () => {
    const a = await upgradePeer(true, []);
    const fleet = { peersFor: () => [{ id: 'a', peerUrl: a.url }] } as unknown as FleetView;
    const fwd = peerDispatch(fleet);
    const pub = await listen((_req, res) => res.writeHead(400).end());
    pub.server.on('upgrade', (req, socket, head) => {
      if (!fwd.upgrade(publicExchange(req, route, 'websocket', 'req-u', process.hrtime.bigint()), socket, head)) socket.destroy();
    });
    const got = await dialUpgrade(pub.url);
    expect(got).toMatch(/^HTTP\/1\.1 530 Tunnel Offline\r\n/);
    expect(got).toContain('Tunnel-Error: tunnel_offline');
    expect(got).toContain('Tunnel-Request-Id: req-u');
  });
});
