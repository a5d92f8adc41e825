// HTTP must survive the trip unchanged (issue "Data path"): methods, status
// codes (100-continue, 204, 304, HEAD), duplicate headers with case and order,
// byte-exact request targets, chunked and Content-Length bodies both ways.
// A real origin, two real relays and a real connector; raw sockets where
// node's client would normalise what is being checked.

import type http from 'node:http';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFleet, type Fleet } from './harness/fleet.js';
import { startOrigin, type Origin } from './harness/origin.js';
import { dechunk, hashReadable, MiB, nodeRequest, pairsOf, PatternSource, rawHttp, type RawResponse } from './harness/data-path.js';

interface Echo {
  method: string;
  url: string;
  rawHeaders: string[];
  bodyLength: number;
  bodySha: string;
  body: string;
}

/** Headers the tunnel itself adds or owns toward the origin (everything else must arrive as sent). */
const TUNNEL_ADDED = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-real-ip', 'tunnel-connecting-ip', 'tunnel-request-id', 'connection', 'host']);
/** Headers Node's server or the relay adds toward the client. */
const RELAY_ADDED = new Set(['date', 'connection', 'keep-alive', 'tunnel-request-id', 'transfer-encoding']);

const RESPONSE_HEADERS = [
  'Set-Cookie', 'a=1; Path=/',
  'X-Resp-CamelCase', 'Mixed',
  'set-cookie', 'b=2; HttpOnly',
  'Vary', 'Accept',
  'Set-Cookie', 'c=3; Secure; SameSite=Lax',
  'vary', 'Origin',
  'X-Latin1', 'caf\u00e9',
  'x-empty', '',
  'Content-Type', 'text/plain',
];

function origin(req: http.IncomingMessage, res: http.ServerResponse): void {
  const mode = String(req.headers['x-mode'] ?? 'echo');
  if (mode === 'length' || mode === 'chunked') {
    // A pseudo-random response body of x-size bytes, with a length or chunked.
    req.resume();
    const size = Number(req.headers['x-size']);
    if (mode === 'length') res.writeHead(200, { 'Content-Length': String(size), 'Content-Type': 'application/octet-stream' });
    else res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
    new PatternSource(size, 7, 100_000).pipe(res);
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    if (mode === 'status') {
      const status = Number(req.headers['x-status']);
      const reason = req.headers['x-reason'] as string | undefined;
      const headers: string[] = status === 304 ? ['ETag', '"v1"', 'Cache-Control', 'max-age=60'] : ['X-Status-Was', String(status)];
      if (status !== 204 && status !== 304) headers.push('Content-Length', String(`status ${status}`.length));
      res.writeHead(status, reason, headers);
      res.end(status === 204 || status === 304 ? undefined : `status ${status}`);
      return;
    }
    if (mode === 'headers') {
      const text = 'headers\n';
      res.writeHead(200, 'OK', [...RESPONSE_HEADERS, 'Content-Length', String(text.length)]);
      // A Buffer body: with a string body node would encode the head as UTF-8 with it.
      res.end(Buffer.from(text));
      return;
    }
    if (req.method === 'HEAD') {
      // HEAD: the length of the GET representation, and no body.
      res.writeHead(200, { 'Content-Length': '12345', 'Content-Type': 'text/plain', 'X-Head': 'yes' });
      res.end();
      return;
    }
    const echo: Echo = {
      method: req.method!,
      url: req.url!,
      rawHeaders: req.rawHeaders,
      bodyLength: body.length,
      bodySha: createHash('sha256').update(body).digest('hex'),
      body: body.length <= 4096 ? body.toString('latin1') : '',
    };
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(echo));
  });
}

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

describe('HTTP fidelity through the tunnel', () => {
  let fleet: Fleet;
  let org: Origin;
  let ports: number[];

  beforeAll(async () => {
    org = await startOrigin(origin);
    fleet = await startFleet({ relays: 2 });
    await fleet.connector({ url: org.url });
    ports = fleet.relays.map((r) => r.http);
  });
  afterAll(async () => {
    await fleet?.close();
    await org?.close();
  });

  it('carries every method (and a custom one) with its body, through both relays', async () => {
    const methods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'PURGE'];
    for (const [i, method] of methods.entries()) {
      const port = ports[i % 2]!;
      const withBody = !['GET', 'HEAD', 'OPTIONS'].includes(method);
      const body = withBody ? `body of ${method} \u00ff\u0000 end` : undefined;
      const r = await nodeRequest({ port, method, path: `/m/${method.toLowerCase()}?i=${i}`, body: body === undefined ? undefined : Buffer.from(body, 'latin1'), headers: body === undefined ? {} : { 'content-length': String(Buffer.byteLength(body, 'latin1')) } });
      expect(r.status, method).toBe(200);
      if (method === 'HEAD') {
        expect(r.body.length).toBe(0);
        expect(r.headers['content-length']).toBe('12345');
        expect(r.headers['x-head']).toBe('yes');
        continue;
      }
      const e = JSON.parse(r.body.toString()) as Echo;
      expect(e.method).toBe(method);
      expect(e.url).toBe(`/m/${method.toLowerCase()}?i=${i}`);
      expect(e.body).toBe(body ?? '');
    }
  });

  it('HEAD: Content-Length kept and no body bytes on the wire', async () => {
    const r = await rawHttp(ports[0]!, 'HEAD /thing HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n');
    expect(r.status).toBe(200);
    expect(r.header('content-length')).toBe('12345');
    expect(r.header('transfer-encoding')).toBeUndefined();
    expect(r.body).toBe('');
  });

  it('Expect: 100-continue: the client gets 100, then sends the body, then gets the final response', async () => {
    const body = Buffer.from('x'.repeat(100_000));
    const r = await nodeRequest({ port: ports[1]!, method: 'POST', path: '/upload', headers: { 'content-length': String(body.length) }, body, expectContinue: true });
    expect(r.sawContinue).toBe(true);
    expect(r.status).toBe(200);
    const e = JSON.parse(r.body.toString()) as Echo;
    expect(e.bodyLength).toBe(body.length);
    expect(e.bodySha).toBe(sha(body));
  });

  it('204 and 304 arrive with their headers and no body; reason phrases are kept', async () => {
    const r204 = await rawHttp(ports[0]!, 'DELETE /item/1 HTTP/1.1\r\nHost: app.test\r\nX-Mode: status\r\nX-Status: 204\r\nConnection: close\r\n\r\n');
    expect(r204.statusLine).toBe('HTTP/1.1 204 No Content');
    expect(r204.header('x-status-was')).toBe('204');
    expect(r204.header('content-length')).toBeUndefined();
    expect(r204.header('transfer-encoding')).toBeUndefined();
    expect(r204.body).toBe('');

    const r304 = await rawHttp(ports[1]!, 'GET /cached HTTP/1.1\r\nHost: app.test\r\nX-Mode: status\r\nX-Status: 304\r\nIf-None-Match: "v1"\r\nConnection: close\r\n\r\n');
    expect(r304.statusLine).toBe('HTTP/1.1 304 Not Modified');
    expect(r304.header('etag')).toBe('"v1"');
    expect(r304.header('cache-control')).toBe('max-age=60');
    expect(r304.header('transfer-encoding')).toBeUndefined();
    expect(r304.body).toBe('');

    const custom = await rawHttp(ports[0]!, 'GET /teapot HTTP/1.1\r\nHost: app.test\r\nX-Mode: status\r\nX-Status: 418\r\nX-Reason: Short And Stout\r\nConnection: close\r\n\r\n');
    expect(custom.statusLine).toBe('HTTP/1.1 418 Short And Stout');
    expect(custom.body).toBe('status 418');
  });

  it('duplicate request headers reach the origin in order, with their case and bytes', async () => {
    const sent: Array<[string, string]> = [
      ['X-Dup', 'one'],
      ['X-CamelCase-Header', 'Value  With Spaces'],
      ['accept', '*/*'],
      ['x-dup', 'two'],
      ['Cookie', 'a=1'],
      ['X-DUP', 'three'],
      ['X-Latin1', 'caf\u00e9 \u00ff'],
      ['Cookie', 'b=2'],
    ];
    const head = `GET /hdrs HTTP/1.1\r\nHost: app.test\r\n${sent.map(([k, v]) => `${k}: ${v}\r\n`).join('')}Connection: close\r\n\r\n`;
    const r = await rawHttp(ports[0]!, head);
    expect(r.status).toBe(200);
    const e = JSON.parse(Buffer.from(dechunkIf(r), 'latin1').toString('utf8')) as Echo;
    const seen = pairsOf(e.rawHeaders).filter(([k]) => !TUNNEL_ADDED.has(k.toLowerCase()));
    expect(seen).toEqual(sent);
    // The Host the client sent is what the origin sees.
    expect(pairsOf(e.rawHeaders).filter(([k]) => k.toLowerCase() === 'host').map(([, v]) => v)).toEqual(['app.test']);
  });

  it('duplicate response headers (several Set-Cookie) reach the client in order, with their case', async () => {
    const r = await rawHttp(ports[1]!, 'GET /cookies HTTP/1.1\r\nHost: app.test\r\nX-Mode: headers\r\nConnection: close\r\n\r\n');
    expect(r.status).toBe(200);
    const got = r.headers.filter(([k]) => !RELAY_ADDED.has(k.toLowerCase()));
    expect(got).toEqual([...pairsOf(RESPONSE_HEADERS), ['Content-Length', '8']]);
    expect(r.body).toBe('headers\n');
    expect(r.header('tunnel-request-id')).toMatch(/^[0-9a-f]{21}$/);

    // And through node's client: three separate Set-Cookie values.
    const n = await nodeRequest({ port: ports[0]!, path: '/cookies', headers: { 'x-mode': 'headers' } });
    expect(n.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; HttpOnly', 'c=3; Secure; SameSite=Lax']);
  });

  it('request targets arrive byte for byte (percent-encoding, odd but legal characters, no normalisation)', async () => {
    const targets = [
      '/a%2Fb/%E2%9C%93?x=1&x=2&y=%20+',
      "/p;matrix=1,2/~user/!$&'()*+,;=:@/x",
      '/./../dots/%2e%2E/./a/../b',
      '//double//slash/',
      '/trailing?',
      '/q?a=b?c=%3F&&d==&e&%26=%3d',
      '/case/%7e%7E%2f%2F?Q=%5B%5d',
      '/enc%00nul/%FF%fe',
      '/[brackets]/{braces}/|pipe|/`tick`/^caret',
      `/long/${'seg%20ment/'.repeat(600)}end?${'k=v&'.repeat(500)}z`,
    ];
    for (const [i, t] of targets.entries()) {
      const r = await rawHttp(ports[i % 2]!, `GET ${t} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n`);
      expect(r.status, t).toBe(200);
      const e = JSON.parse(Buffer.from(dechunkIf(r), 'latin1').toString('utf8')) as Echo;
      expect(e.url, t.slice(0, 80)).toBe(t);
    }
  });

  it('Content-Length and chunked request bodies reach the origin with the same framing and bytes', async () => {
    const size = 3 * MiB + 17;
    const expected = await hashReadable(new PatternSource(size, 3));

    const withLength = await nodeRequest({ port: ports[0]!, method: 'PUT', path: '/cl', headers: { 'content-length': String(size) }, body: new PatternSource(size, 3) });
    const e1 = JSON.parse(withLength.body.toString()) as Echo;
    const h1 = Object.fromEntries(pairsOf(e1.rawHeaders).map(([k, v]) => [k.toLowerCase(), v]));
    expect(h1['content-length']).toBe(String(size));
    expect(h1['transfer-encoding']).toBeUndefined();
    expect(e1.bodyLength).toBe(size);
    expect(e1.bodySha).toBe(expected.sha256);

    // No length: node's client sends it chunked, in many writes.
    const chunked = await nodeRequest({ port: ports[1]!, method: 'POST', path: '/chunked', body: Readable.from(chunksOf(new PatternSource(size, 3))) });
    const e2 = JSON.parse(chunked.body.toString()) as Echo;
    const h2 = Object.fromEntries(pairsOf(e2.rawHeaders).map(([k, v]) => [k.toLowerCase(), v]));
    expect(h2['transfer-encoding']).toBe('chunked');
    expect(h2['content-length']).toBeUndefined();
    expect(e2.bodyLength).toBe(size);
    expect(e2.bodySha).toBe(expected.sha256);

    // An empty chunked body stays an empty chunked body.
    const empty = await rawHttp(ports[0]!, 'POST /empty HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n');
    const e3 = JSON.parse(empty.body.slice(empty.body.indexOf('{'), empty.body.lastIndexOf('}') + 1)) as Echo;
    expect(e3.bodyLength).toBe(0);
  });

  it('Content-Length and chunked response bodies reach the client with the same framing and bytes', async () => {
    const size = 3 * MiB + 5;
    const expected = await hashReadable(new PatternSource(size, 7, 100_000));

    const withLength = await nodeRequest({ port: ports[1]!, path: '/dl', headers: { 'x-mode': 'length', 'x-size': String(size) } });
    expect(withLength.headers['content-length']).toBe(String(size));
    expect(withLength.headers['transfer-encoding']).toBeUndefined();
    expect(withLength.body.length).toBe(size);
    expect(sha(withLength.body)).toBe(expected.sha256);

    const chunked = await nodeRequest({ port: ports[0]!, path: '/dl', headers: { 'x-mode': 'chunked', 'x-size': String(size) } });
    expect(chunked.headers['transfer-encoding']).toBe('chunked');
    expect(chunked.headers['content-length']).toBeUndefined();
    expect(chunked.body.length).toBe(size);
    expect(sha(chunked.body)).toBe(expected.sha256);
  });
});

/** Re-chunk a stream into uneven writes (1..64 KiB), so a chunked upload has many chunk sizes. */
async function* chunksOf(src: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let n = 0;
  for await (const c of src) {
    let off = 0;
    while (off < c.length) {
      const len = 1 + ((n++ * 7919) % (64 * 1024));
      yield c.subarray(off, off + len);
      off += len;
    }
  }
}

function dechunkIf(r: RawResponse): string {
  return r.header('transfer-encoding') === 'chunked' ? dechunk(r.body) : r.body;
}
