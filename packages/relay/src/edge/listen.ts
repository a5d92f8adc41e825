import type { Server } from 'node:net';

export interface ListenAddress {
  host: string;
  port: number;
}

/** `HOST:PORT`, `:PORT` or `PORT` (all interfaces), `[::1]:PORT`. Port 0 picks a free one. */
export function parseListen(spec: string | number): ListenAddress {
  const s = String(spec).trim();
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(s) ?? /^()()(\d+)$/.exec(s);
  if (!m) throw new Error(`"${s}" is not a listen address (expected HOST:PORT, :PORT or PORT)`);
  const port = Number(m[3]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`"${s}": port out of range`);
  // || not ??: the bare-PORT pattern matches its host groups as ''.
  return { host: m[1] || m[2] || '0.0.0.0', port };
}

export function listen(server: Server, addr: ListenAddress): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => reject(e);
    server.once('error', onError);
    server.listen(addr.port, addr.host, () => {
      server.off('error', onError);
      const a = server.address();
      resolve(typeof a === 'object' && a ? a.port : addr.port);
    });
  });
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}
