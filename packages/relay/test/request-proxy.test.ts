// RequestProxy, the public request path, behind a real HTTP listener on
// 127.0.0.1 with routes from a real file store: Host → route (404
// unknown_hostname otherwise, before Access or any dispatch is asked), then
// Access, then the dispatches in order (the first that takes the exchange
// answers it), else 530 tunnel_offline. The same for upgrades, answered on the
// raw socket. LocalDispatch and PeerDispatch have their own tests; here they
// are stand-ins that record what they were offered.
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';
import { pino } from 'pino';
import { request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ErrorAnswers } from '../src/edge/error-page.js';
import type { Dispatch, Exchange } from '../src/edge/exchange.js';
import { RequestProxy, type AccessCheck } from '../src/edge/request-proxy.js';
import { RouteTable } from '../src/edge/route-table.js';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/types.js';
import { waitFor } from '../../../test/harness/wait.js';

/** A dispatch that takes an exchange only when `takes` is set, and records every one it was offered. */
class Recording implements Dispatch {
  offered: string[] = [];
  takes = false;
  constructor(private readonly name: string) {}
  serve(ex: Exchange, res: http.ServerResponse): boolean {
    this.offered.push(`${ex.req.method} ${ex.req.url}`);
    if (!this.takes) return false;
    res.end(`${this.name} ${ex.route.tunnelId} ${ex.requestId}`);
    return true;
  }
  upgrade(ex: Exchange, socket: Duplex): boolean {
    this.offered.push(`upgrade ${ex.req.url}`);
    if (!this.takes) return false;
    socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n${this.name}`);
    return true;
  }
}

/** Access as a test drives it: `decide` null lets the request through at once; otherwise the gate waits for the test. */
class ScriptedAccess implements AccessCheck {
  asked: string[] = [];
  hold = false;
  private pending: Array<(go: boolean) => void> = [];
  check(req: http.IncomingMessage, _route: unknown, reply: { res: http.ServerResponse } | { socket: Duplex }): Promise<boolean> | null {
    this.asked.push(req.url ?? '');
    if (!this.hold) return null;
    return new Promise((resolve) => {
      this.pending.push((go) => {
        // A gate that refuses answers the client itself.
        if (!go && 'res' in reply) reply.res.writeHead(403).end('denied by access');
        resolve(go);
      });
    });
  }
  /** Settle the oldest held request. */
  settle(go: boolean): void {
    this.pending.shift()!(go);
  }
  get waiting(): number {
    return this.pending.length;
  }
}

/** A raw HTTP/1.1 upgrade request; resolves with everything the server sent before closing. */
function rawUpgrade(port: number, host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let got = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (got += d));
    s.on('close', () => resolve(got));
    s.on('error', reject);
    s.write(`GET /ws HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n`);
  });
}

describe('RequestProxy', () => {
  let dir: string;
  let store: Store;
  let routes: RouteTable;
  let server: http.Server;
  let url: string;
  let port: number;
  let tunnelId: string;
  let lastResponse: http.ServerResponse | undefined;
  const local = new Recording('local');
  const peer = new Recording('peer');
  const access = new ScriptedAccess();

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'tunnel-request-proxy-'));
    store = await openStore(`file:${dir}`, { watch: false });
    const acct = await store.createAccount('alice');
    tunnelId = (await store.createTunnel(acct.id, 'app')).id;
    await store.addRoute({ hostname: 'app.test', tunnelId, accountId: acct.id });
    routes = new RouteTable(store);
    await routes.load();
    const proxy = new RequestProxy(routes, [local, peer], new ErrorAnswers(pino({ level: 'silent' }), {}), access);
    server = http.createServer((req, res) => {
      lastResponse = res;
      proxy.handleRequest(req, res);
    });
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => proxy.handleUpgrade(req, socket, head));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
    url = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    routes?.close();
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    for (const d of [local, peer]) {
      d.offered = [];
      d.takes = false;
    }
    access.asked = [];
    access.hold = false;
  });

  const get = (p: string, host: string, headers: Record<string, string> = {}) => request(`${url}${p}`, { headers: { host, accept: 'application/json', ...headers } });

  it('an unknown Host gets 404 unknown_hostname, before Access or any dispatch is asked', async () => {
    local.takes = true;
    const r = await get('/x', 'nope.test');
    expect(r.statusCode).toBe(404);
    expect(r.headers['tunnel-error']).toBe('unknown_hostname');
    expect(r.headers['tunnel-request-id']).toMatch(/^[0-9a-f]{21}$/);
    await r.body.text();
    expect([access.asked, local.offered, peer.offered]).toEqual([[], [], []]);
  });

  it('the first dispatch that takes the exchange answers it; the ones after are not asked', async () => {
    local.takes = true;
    peer.takes = true;
    const r = await get('/a', 'APP.test:8080');
    const body = await r.body.text();
    expect(r.statusCode).toBe(200);
    // The route Host named (case and port ignored), and a fresh request id.
    expect(body).toMatch(new RegExp(`^local ${tunnelId} [0-9a-f]{21}$`));
    expect([local.offered, peer.offered]).toEqual([['GET /a'], []]);
  });

  it('a dispatch that declines passes the exchange on to the next', async () => {
    peer.takes = true;
    const r = await get('/b', 'app.test');
    expect(await r.body.text()).toMatch(/^peer /);
    expect([local.offered, peer.offered]).toEqual([['GET /b'], ['GET /b']]);
  });

  it('when every dispatch declines: 530 tunnel_offline', async () => {
    const r = await get('/c', 'app.test');
    expect(r.statusCode).toBe(530);
    expect(r.headers['tunnel-error']).toBe('tunnel_offline');
    await r.body.text();
    expect([local.offered, peer.offered]).toEqual([['GET /c'], ['GET /c']]);
  });

  it('Access is asked first: nothing is dispatched while it decides, nor after it refuses', async () => {
    local.takes = true;
    access.hold = true;
    const refused = get('/denied', 'app.test');
    await waitFor(() => access.waiting === 1, 2_000, { message: 'Access asked' });
    expect(local.offered).toEqual([]);
    access.settle(false);
    const r = await refused;
    expect(r.statusCode).toBe(403);
    expect(await r.body.text()).toBe('denied by access');
    expect(local.offered).toEqual([]);

    const allowed = get('/allowed', 'app.test');
    await waitFor(() => access.waiting === 1, 2_000, { message: 'Access asked' });
    access.settle(true);
    expect(await (await allowed).body.text()).toMatch(/^local /);
    expect(local.offered).toEqual(['GET /allowed']);
  });

  it('a request whose client left while Access decided is not dispatched', async () => {
    local.takes = true;
    access.hold = true;
    const s = connect(port, '127.0.0.1');
    s.on('error', () => {});
    s.write('GET /gone HTTP/1.1\r\nHost: app.test\r\n\r\n');
    await waitFor(() => access.waiting === 1, 2_000, { message: 'Access asked' });
    s.destroy();
    await waitFor(() => lastResponse?.destroyed === true, 2_000, { message: 'the server saw the client go' });
    access.settle(true);
    await new Promise((r) => setImmediate(r));
    expect(local.offered).toEqual([]);
  });

  it('upgrades: unknown Host 404 and every dispatch declining 530, on the raw socket; else the first that takes it', async () => {
    expect(await rawUpgrade(port, 'nope.test')).toMatch(/^HTTP\/1\.1 404 [^]*\r\nTunnel-Error: unknown_hostname\r\n/);
    expect(await rawUpgrade(port, 'app.test')).toMatch(/^HTTP\/1\.1 530 [^]*\r\nTunnel-Error: tunnel_offline\r\n/);
    expect([local.offered, peer.offered]).toEqual([['upgrade /ws'], ['upgrade /ws']]);
    peer.takes = true;
    expect(await rawUpgrade(port, 'app.test')).toMatch(/^HTTP\/1\.1 101 [^]*\r\n\r\npeer$/);
  });
});
