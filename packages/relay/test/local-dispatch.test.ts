// LocalDispatch over real yamux sessions on the protocol's in-memory duplex
// pair, each with a scripted connector on the far end, behind a real HTTP
// listener on 127.0.0.1: which connection a request takes, when it is sent
// again on another, and what the client gets when it cannot be.
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { request } from 'undici';
import {
  Session,
  decodeRequestHead,
  duplexTransport,
  encodeControl,
  encodeResponseHead,
  memoryDuplexPair,
  readHead,
  type RequestHead,
  type YamuxStream,
} from '@tunnel/protocol';
import { ConnectorConnection } from '../src/connectors/connector-connection.js';
import { TunnelConnections } from '../src/connectors/tunnel-connections.js';
import { LocalDispatch } from '../src/edge/local-dispatch.js';
import { ErrorAnswers } from '../src/edge/error-page.js';
import { publicExchange, type Exchange, type ProxyHooks } from '../src/edge/exchange.js';
import { PeerDispatch } from '../src/fleet/peer-dispatch.js';
import { PeerAuth } from '../src/fleet/peer-auth.js';
import { MemoryReplayCache } from '../src/fleet/replay-cache.js';
import type { FleetView } from '../src/fleet/fleet-view.js';
import type { Route } from '../src/store/types.js';

const silent = pino({ level: 'silent' });
const route: Route = { hostname: 'app.test', tunnelId: 't1', accountId: 'a1', createdAt: 0 };

/** What a scripted connector does with one request stream. */
type Script = (s: YamuxStream, head: RequestHead, body: Buffer) => void;

const answer =
  (status: number, body: string): Script =>
  (s) => {
    s.write(encodeResponseHead({ status, statusText: '', headers: [['content-length', String(Buffer.byteLength(body))]] }));
    s.end(body);
  };
/** The stream is reset before any answer: the connection failed under the request. */
const reset: Script = (s) => s.destroy(new Error('connector went away'));

const sessions: Session[] = [];
const servers: http.Server[] = [];

/** A registered connector connection of tunnel t1 whose far end runs `script`; `seen` gets each request's method and body. */
async function connection(connIndex: number, script: Script, seen: string[]): Promise<ConnectorConnection> {
  const [a, b] = memoryDuplexPair();
  const relaySide = new Session(duplexTransport(a), { client: false, keepaliveIntervalMs: 0 });
  const connectorSide = new Session(duplexTransport(b), { client: true, keepaliveIntervalMs: 0 });
  sessions.push(relaySide, connectorSide);
  const conn = new ConnectorConnection(
    relaySide,
    { connectionId: `conn-${connIndex}`, tunnelId: route.tunnelId, accountId: 'a1', tokenId: 'tok', connectorId: 'c1', connIndex, version: 'test', clientIp: '127.0.0.1' },
    { relayId: 'relay-1', region: 'test' },
    silent,
    undefined,
    0,
  );
  connectorSide.on('stream', (s: YamuxStream) => {
    s.on('error', () => {});
    readHead(s, (err, raw) => {
      if (err || !raw) return;
      const head = decodeRequestHead(raw);
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      s.once('end', () => {
        const body = Buffer.concat(chunks);
        seen.push(`${head.method} ${body.toString()}`);
        script(s, head, body);
      });
      s.resume(); // readHead leaves the stream paused
    });
  });
  const control = connectorSide.openStream();
  control.on('error', () => {});
  control.write(encodeControl({ type: 'register', connectorId: 'c1', connIndex, version: 'test', features: [] }));
  await once(conn, 'active');
  return conn;
}

/** A public listener whose every request goes to `local` (599 when it declines). */
async function publicListener(local: LocalDispatch): Promise<string> {
  const server = http.createServer((req, res) => {
    const ex: Exchange = publicExchange(req, route, 'http', 'req-1', process.hrtime.bigint());
    if (!local.serve(ex, res)) res.writeHead(599).end();
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function dispatch(connections: TunnelConnections, responses: number[] = []): LocalDispatch {
  const hooks: ProxyHooks = { onResponse: (_r, status) => void responses.push(status) };
  return new LocalDispatch(connections, silent, hooks, new ErrorAnswers(silent, hooks));
}

afterEach(async () => {
  for (const s of sessions.splice(0)) s.close();
  for (const s of servers.splice(0)) {
    const closed = new Promise((r) => s.close(r));
    s.closeAllConnections();
    await closed;
  }
});

describe('LocalDispatch: a request over this relay\'s own connections', () => {
  it('declines (false, response untouched) when the tunnel has no connection here', async () => {
    const url = await publicListener(dispatch(new TunnelConnections()));
    const r = await request(`${url}/x`);
    expect(r.statusCode).toBe(599);
    await r.body.dump();
  });

  it('passes the answer on with Tunnel-Request-Id, and counts it', async () => {
    const conns = new TunnelConnections();
    const seen: string[] = [];
    conns.add(await connection(0, answer(200, 'hello'), seen));
    const responses: number[] = [];
    const url = await publicListener(dispatch(conns, responses));
    const r = await request(`${url}/x`);
    expect(r.statusCode).toBe(200);
    expect(r.headers['tunnel-request-id']).toBe('req-1');
    expect(await r.body.text()).toBe('hello');
    expect(seen).toEqual(['GET ']);
    expect(responses).toEqual([200]);
  });

  it('a GET whose stream fails before an answer is sent once more, on another connection', async () => {
    const conns = new TunnelConnections();
    const failed: string[] = [];
    const served: string[] = [];
    conns.add(await connection(0, reset, failed));
    const busier = await connection(1, answer(200, 'second'), served);
    // A stream in flight (a long poll, say) makes it the second choice, and
    // on a par with the failing one while that one's stream is still open:
    // the retry must go to it because it is another connection, not by luck.
    busier.openStream().on('error', () => {});
    conns.add(busier);
    const url = await publicListener(dispatch(conns));
    const r = await request(`${url}/x`);
    expect(r.statusCode).toBe(200);
    expect(await r.body.text()).toBe('second');
    expect(failed).toEqual(['GET ']);
    expect(served).toEqual(['GET ']);
  });

  it('only once: when the second connection fails too, the client gets 502 connector_stream_failed', async () => {
    const conns = new TunnelConnections();
    const seen: string[] = [];
    conns.add(await connection(0, reset, seen));
    conns.add(await connection(1, reset, seen));
    conns.add(await connection(2, answer(200, 'never'), seen));
    const responses: number[] = [];
    // A third attempt would reach the healthy connection.
    const url = await publicListener(dispatch(conns, responses));
    const r = await request(`${url}/x`, { headers: { accept: 'application/json' } });
    expect(r.statusCode).toBe(502);
    expect(r.headers['tunnel-error']).toBe('connector_stream_failed');
    await r.body.dump();
    expect(seen).toEqual(['GET ', 'GET ']);
    expect(responses).toEqual([502]);
  });

  it('a POST whose stream fails is not sent again: 502', async () => {
    const conns = new TunnelConnections();
    const failed: string[] = [];
    const other: string[] = [];
    conns.add(await connection(0, reset, failed));
    conns.add(await connection(1, answer(200, 'second'), other));
    const url = await publicListener(dispatch(conns));
    const r = await request(`${url}/x`, { method: 'POST', body: 'payload', headers: { accept: 'application/json' } });
    expect(r.statusCode).toBe(502);
    expect(r.headers['tunnel-error']).toBe('connector_stream_failed');
    await r.body.dump();
    expect(failed).toEqual(['POST payload']);
    expect(other).toEqual([]);
  });

  it('a body a peer relay buffered is sent whole, and a bodyless buffered request may be retried', async () => {
    const conns = new TunnelConnections();
    const failed: string[] = [];
    const served: string[] = [];
    conns.add(await connection(0, reset, failed));
    conns.add(await connection(1, answer(200, 'ok'), served));
    const local = dispatch(conns);
    const server = http.createServer((req, res) => {
      const ex = publicExchange(req, route, 'http', 'req-1', process.hrtime.bigint());
      // As a peer endpoint hands it over: the body already read (here: none).
      req.resume();
      req.once('end', () => void local.serve({ ...ex, body: { kind: 'buffered', bytes: Buffer.alloc(0) } }, res));
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const r = await request(`http://127.0.0.1:${(server.address() as AddressInfo).port}/x`, { method: 'DELETE' });
    expect(r.statusCode).toBe(200);
    await r.body.dump();
    expect(failed).toEqual(['DELETE ']);
    expect(served).toEqual(['DELETE ']);
  });
});

describe('PeerDispatch composed with a LocalDispatch', () => {
  it('a peer that turns a POST away: the connection that arrived here meanwhile serves it, body intact', async () => {
    // The peer relay answers as one holding no usable connection.
    const refused: string[] = [];
    const peer = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        refused.push(`${req.method} ${Buffer.concat(chunks).toString()}`);
        res.writeHead(530, { 'tunnel-error': 'tunnel_offline', 'tunnel-error-source': 'relay' }).end();
      });
    });
    servers.push(peer);
    await new Promise<void>((r) => peer.listen(0, '127.0.0.1', r));
    const fleet = { peersFor: () => [{ id: 'peer-b', peerUrl: `http://127.0.0.1:${(peer.address() as AddressInfo).port}` }] } as unknown as FleetView;
    const conns = new TunnelConnections();
    const served: string[] = [];
    conns.add(await connection(0, answer(201, 'made here'), served));
    const peers = new PeerDispatch({ selfId: 'relay-a', auth: new PeerAuth('fleet-secret-for-tests', new MemoryReplayCache()), fleet, log: silent, local: dispatch(conns) });
    const server = http.createServer((req, res) => {
      if (!peers.serve(publicExchange(req, route, 'http', 'req-1', process.hrtime.bigint()), res)) res.writeHead(599).end();
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const r = await request(`http://127.0.0.1:${(server.address() as AddressInfo).port}/x`, { method: 'POST', body: 'payload' });
    expect(r.statusCode).toBe(201);
    expect(await r.body.text()).toBe('made here');
    expect(refused).toEqual(['POST payload']);
    expect(served).toEqual(['POST payload']);
    await peers.close();
  });
});
