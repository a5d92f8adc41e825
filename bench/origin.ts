// The benchmark's origin (a separate process, started by bench/tunnel.ts):
//
//   GET  /download?bytes=N   N bytes (default 1 GiB), Content-Length, streamed with backpressure
//   POST /upload             reads the body to the end, answers {"bytes": N}
//   anything else            200 with a 1 KiB text body
//
// Prints {"event":"listening","port":N} once it listens on 127.0.0.1; with
// BENCH_ORIGIN_H2C=1 it also serves the same answers over cleartext HTTP/2
// (prior knowledge, for h2load's direct row) and prints {"event":"listening-h2c","port":N}.

import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';

const BODY_1K = Buffer.alloc(1024, 'x');
const CHUNK = Buffer.alloc(64 * 1024, 'd');
const GiB = 1024 * 1024 * 1024;

// Both listeners take the one handler (node's HTTP/2 compatibility objects have the same surface here).
function answer(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = req.url ?? '/';
  if (url.startsWith('/download')) {
    const q = url.indexOf('?bytes=');
    const total = q === -1 ? GiB : Number(url.slice(q + 7));
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
    let left = total;
    const go = () => {
      while (left > 0) {
        const n = Math.min(left, CHUNK.length);
        left -= n;
        if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
          res.once('drain', go);
          return;
        }
      }
      res.end();
    };
    res.on('close', () => (left = 0));
    go();
    return;
  }
  if (url.startsWith('/upload')) {
    let n = 0;
    req.on('data', (d: Buffer) => (n += d.length));
    req.on('end', () => {
      const body = JSON.stringify({ bytes: n });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
      res.end(body);
    });
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '1024' });
  res.end(BODY_1K);
}
const server = http.createServer(answer);
// Connections stay open between the benchmark's phases, direct and through the connector alike.
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.requestTimeout = 0;

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ event: 'listening', port: (server.address() as AddressInfo).port }) + '\n');
});
if (process.env.BENCH_ORIGIN_H2C === '1') {
  const h2c = http2.createServer({ settings: { maxConcurrentStreams: 1000 } }, answer as unknown as (q: http2.Http2ServerRequest, s: http2.Http2ServerResponse) => void);
  h2c.listen(0, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ event: 'listening-h2c', port: (h2c.address() as AddressInfo).port }) + '\n');
  });
}
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
