import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Origin {
  server: http.Server;
  port: number;
  url: string;
  close(): Promise<void>;
}

/** A real HTTP origin on 127.0.0.1 (in the test process). */
export async function startOrigin(handler: http.RequestListener, opts: http.ServerOptions = {}): Promise<Origin> {
  const server = http.createServer(opts, handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Reads a request body to its end: how many bytes, and their SHA-256 (hex). */
export function hashBody(req: http.IncomingMessage): Promise<{ bytes: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      bytes += c.length;
      h.update(c);
    });
    req.once('end', () => resolve({ bytes, sha256: h.digest('hex') }));
    req.once('error', reject);
  });
}
