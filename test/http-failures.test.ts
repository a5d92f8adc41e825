// Failures on the data path (issue "Data path"): an origin that refuses (502),
// times out (504), or resets mid-body (the client must see an aborted
// response, never a short one passed off as complete); httpHostHeader
// rewriting; and a client that goes away mid-response or mid-upload (the
// origin request is cancelled, the stream freed on relay and connector).

import http from 'node:http';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { request as undiciRequest } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { dechunk, nodeRequest, rawHttp } from './harness/data-path.js';
import type { Proc } from './harness/procs.js';
import { waitFor } from './harness/wait.js';

/** What the origin saw of requests that did not run to completion, by x-tag. */
const seen = new Map<string, { closedEarly: boolean; bytes: number; finished: boolean }>();
const held = new Set<http.ServerResponse>();

function origin(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url!, 'http://x');
  const tag = String(req.headers['x-tag'] ?? url.pathname);
  switch (url.pathname) {
    case '/slow/headers':
      // Never answers (until the test file ends).
      req.resume();
      held.add(res);
      return;
    case '/slow/body':
      req.resume();
      held.add(res);
      res.writeHead(200, { 'content-length': '1000' });
      res.write('x'.repeat(100));
      return;
    case '/reset/length':
    case '/reset/chunked': {
      req.resume();
      const rst = url.searchParams.get('how') === 'rst';
      if (url.pathname === '/reset/length') res.writeHead(200, { 'content-length': String(1024 * 1024) });
      else res.writeHead(200, { 'content-type': 'text/plain' });
      res.write(Buffer.alloc(32 * 1024, 0x61));
      res.write(Buffer.alloc(32 * 1024, 0x62), () => {
        // Let the connector read what was sent, then drop the connection.
        setTimeout(() => (rst ? req.socket.resetAndDestroy() : req.socket.destroy()), 50);
      });
      return;
    }
    case '/hosthdr':
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ host: req.headers.host, xfh: req.headers['x-forwarded-host'], raw: req.rawHeaders }));
      return;
    case '/forever': {
      // Streams a chunk every 20 ms for at most 30 s; records whether it was cancelled first.
      req.resume();
      const s = { closedEarly: false, bytes: 0, finished: false };
      seen.set(tag, s);
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const t = setInterval(() => {
        res.write(Buffer.alloc(16 * 1024, 0x7a));
        s.bytes += 16 * 1024;
      }, 20);
      const stop = setTimeout(() => {
        clearInterval(t);
        s.finished = true;
        res.end();
      }, 30_000);
      res.once('close', () => {
        clearInterval(t);
        clearTimeout(stop);
        if (!res.writableFinished) s.closedEarly = true;
      });
      return;
    }
    case '/sink': {
      // Upload sink: counts bytes; records whether the body ended or was cut.
      const s = { closedEarly: false, bytes: 0, finished: false };
      seen.set(tag, s);
      req.on('data', (c: Buffer) => (s.bytes += c.length));
      req.on('end', () => {
        s.finished = true;
        res.end('got it');
      });
      req.once('close', () => {
        if (!req.complete) s.closedEarly = true;
      });
      return;
    }
    case '/early': {
      // Answers at once without reading the (large) upload.
      const s = { closedEarly: false, bytes: 0, finished: false };
      seen.set(tag, s);
      req.on('data', (c: Buffer) => (s.bytes += c.length));
      req.pause();
      res.writeHead(413, { 'content-type': 'text/plain', 'content-length': '9' });
      res.end('too large');
      return;
    }
    default:
      req.resume();
      res.end('ok');
  }
}

describe('data path failures', () => {
  let fleet: Fleet;
  let org: Origin;
  let connector: Proc;
  let ports: number[];

  beforeAll(async () => {
    org = await startOrigin(origin);
    const dead = await startOrigin((_q, s) => s.end());
    await dead.close(); // a port nothing listens on: connections are refused
    fleet = await startFleet({ relays: 2 });
    const config = path.join(fleet.dir, 'config.yml');
    writeFileSync(
      config,
      [
        'ingress:',
        '  - path: ^/refused',
        `    service: ${dead.url}`,
        '  - path: ^/slow/',
        `    service: ${org.url}`,
        '    originRequest:',
        '      idleTimeout: 1s',
        '  - path: ^/hosthdr',
        `    service: ${org.url}`,
        '    originRequest:',
        '      httpHostHeader: internal.example',
        `  - service: ${org.url}`,
        '',
      ].join('\n'),
    );
    connector = await fleet.connector({ config });
    ports = fleet.relays.map((r) => r.http);
  });
  afterAll(async () => {
    for (const r of held) r.destroy();
    await fleet?.close();
    await org?.close();
  });

  it('origin refuses the connection: 502 with Tunnel-Error origin_refused', async () => {
    for (const port of ports) {
      const r = await nodeRequest({ port, path: '/refused/x', headers: { accept: 'application/json' } });
      expect(r.status).toBe(502);
      expect(r.headers['tunnel-error']).toBe('origin_refused');
      expect(r.headers['tunnel-error-source']).toBe('origin');
      expect(JSON.parse(r.body.toString())).toMatchObject({ error: { status: 502, code: 'origin_refused', source: 'origin' } });
    }
  });

  it('origin does not answer within idleTimeout: 504 with Tunnel-Error origin_timeout', async () => {
    const started = Date.now();
    const r = await nodeRequest({ port: ports[1]!, path: '/slow/headers', headers: { accept: 'application/json' } });
    const elapsed = Date.now() - started;
    expect(r.status).toBe(504);
    expect(r.headers['tunnel-error']).toBe('origin_timeout');
    expect(r.headers['tunnel-error-source']).toBe('origin');
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(10_000);
  });

  it('origin stalls mid-body past idleTimeout: the client sees an aborted response', async () => {
    const raw = await rawHttp(ports[0]!, 'GET /slow/body HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n', 15_000);
    expect(raw.status).toBe(200);
    expect(raw.header('content-length')).toBe('1000');
    expect(raw.body.length).toBeLessThan(1000);
    await expect(nodeRequest({ port: ports[1]!, path: '/slow/body' })).rejects.toThrow();
  });

  for (const how of ['fin', 'rst'] as const) {
    it(`origin ${how === 'fin' ? 'closes' : 'resets'} mid-body (Content-Length): the client never gets a short body as complete`, async () => {
      const target = `/reset/length?how=${how}`;
      const raw = await rawHttp(ports[0]!, `GET ${target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n`);
      expect(raw.status).toBe(200);
      expect(raw.header('content-length')).toBe(String(1024 * 1024));
      expect(raw.body.length).toBeLessThan(1024 * 1024);
      // Two real clients: each must fail the response.
      await expect(nodeRequest({ port: ports[1]!, path: target })).rejects.toThrow();
      await expect(undiciRequest(`http://127.0.0.1:${ports[0]}${target}`, { headers: { host: 'app.test' } }).then((r) => r.body.arrayBuffer())).rejects.toThrow();
    });

    it(`origin ${how === 'fin' ? 'closes' : 'resets'} mid-body (chunked): the client never sees the last chunk`, async () => {
      const target = `/reset/chunked?how=${how}`;
      const raw = await rawHttp(ports[1]!, `GET ${target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n`);
      expect(raw.status).toBe(200);
      expect(raw.header('transfer-encoding')).toBe('chunked');
      expect(() => dechunk(raw.body)).toThrow(/truncated/);
      await expect(nodeRequest({ port: ports[0]!, path: target })).rejects.toThrow();
      await expect(undiciRequest(`http://127.0.0.1:${ports[1]}${target}`, { headers: { host: 'app.test' } }).then((r) => r.body.arrayBuffer())).rejects.toThrow();
    });
  }

  it('httpHostHeader rewrites the Host the origin sees (X-Forwarded-Host keeps the public one)', async () => {
    const r = await nodeRequest({ port: ports[0]!, path: '/hosthdr' });
    expect(r.status).toBe(200);
    const j = JSON.parse(r.body.toString()) as { host: string; xfh: string; raw: string[] };
    expect(j.host).toBe('internal.example');
    expect(j.xfh).toBe('app.test');
    expect(j.raw.filter((_, i) => i % 2 === 0 && j.raw[i]!.toLowerCase() === 'host')).toHaveLength(1);
    // Rules without it keep the client's Host.
    const plain = await nodeRequest({ port: ports[0]!, path: '/other' });
    expect(plain.body.toString()).toBe('ok');
  });

  it('a client that disconnects mid-response cancels the origin request and frees the stream', async () => {
    for (const [n, port] of ports.entries()) {
      const tag = `dl-${n}`;
      const { requestId } = await new Promise<{ requestId: string }>((resolve, reject) => {
        const sock = connect({ host: '127.0.0.1', port });
        let got = '';
        sock.on('error', reject);
        sock.on('data', (d) => {
          got += d.toString('latin1');
          // Head and a good part of the body are in: hang up.
          if (got.length > 64 * 1024) {
            sock.destroy();
            resolve({ requestId: /tunnel-request-id: (\w+)/i.exec(got)![1]! });
          }
        });
        sock.write(`GET /forever HTTP/1.1\r\nHost: app.test\r\nX-Tag: ${tag}\r\n\r\n`);
      });
      await waitFor(() => seen.get(tag)?.closedEarly, 5_000, { message: `origin sees ${tag} cancelled` });
      expect(seen.get(tag)!.finished).toBe(false);
      const relay = fleet.relays[n]!.proc;
      await relay.waitForLog((l) => l.event === 'client-cancelled' && l.requestId === requestId, 5_000);
      await connector.waitForLog((l) => l.event === 'request-cancelled' && l.requestId === requestId, 5_000);
    }
    // The tunnel still serves.
    expect((await nodeRequest({ port: ports[0]!, path: '/after' })).body.toString()).toBe('ok');
  });

  it('an origin that answers before reading the upload: the client gets the whole answer, the upload is held back', async () => {
    const size = 64 * 1024 * 1024;
    let sent = 0;
    const body = new Readable({
      read() {
        if (sent >= size) return void this.push(null);
        sent += 256 * 1024;
        this.push(Buffer.alloc(256 * 1024, 0x42));
      },
    });
    // A keep-alive client: with `Connection: close` the server rightly closes
    // after its early answer, and the client's still-running upload may then
    // hit EPIPE before it reads the answer (a race of the client, not ours).
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const req = http.request({ host: '127.0.0.1', port: ports[0], method: 'POST', path: '/early', agent, setHost: false, headers: { host: 'app.test', 'x-tag': 'early-0', 'content-length': String(size) } });
    req.on('error', () => {});
    body.pipe(req);
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no response within 15 s')), 15_000);
      req.once('response', (r) => {
        clearTimeout(t);
        resolve(r);
      });
    });
    body.unpipe(req);
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    expect(res.statusCode).toBe(413);
    expect(Buffer.concat(chunks).toString()).toBe('too large');
    expect(sent).toBeLessThan(size);
    // The relay stops forwarding the unread body and resets the stream (freed: see the last test).
    const rid = res.headers['tunnel-request-id'];
    await fleet.relays[0]!.proc.waitForLog((l) => l.event === 'body-unread' && l.requestId === rid, 5_000);
    req.destroy();
    agent.destroy();
  });

  it('a client that disconnects mid-upload aborts the origin request (its body is not passed off as complete)', async () => {
    const tag = 'up-0';
    const sock = connect({ host: '127.0.0.1', port: ports[1]! });
    sock.on('error', () => {});
    sock.write(`POST /sink HTTP/1.1\r\nHost: app.test\r\nX-Tag: ${tag}\r\nContent-Length: ${100 * 1024 * 1024}\r\n\r\n`);
    sock.write(Buffer.alloc(512 * 1024, 0x41));
    await waitFor(() => (seen.get(tag)?.bytes ?? 0) >= 256 * 1024, 10_000, { message: 'origin receives the start of the upload' });
    sock.destroy();
    await waitFor(() => seen.get(tag)?.closedEarly, 5_000, { message: 'origin sees the upload cut' });
    expect(seen.get(tag)!.finished).toBe(false);
    expect(seen.get(tag)!.bytes).toBeLessThan(100 * 1024 * 1024);
  });

  it('every stream this file opened was freed: both relays drain at once (no request left in flight)', async () => {
    // Relay drain waits (up to --drain-timeout, 30 s) for streams still open;
    // a stream leaked by any test above would hold it back.
    const t0 = Date.now();
    for (const r of fleet.relays) r.proc.signal('SIGTERM');
    for (const r of fleet.relays) {
      const line = await r.proc.waitForLog((l) => l.event === 'drained', 20_000);
      // drain-delay (1 s) plus scheduling slack.
      expect(line.ms as number, r.id).toBeLessThan(4_000);
    }
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});
