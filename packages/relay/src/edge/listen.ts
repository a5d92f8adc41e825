import type { Server } from 'node:net';
import { parseHostPort, type HostPort } from '@tunnel/protocol';

export type ListenAddress = HostPort;

/** What `:PORT` and `PORT` mean for a relay's listeners: every interface (its public ones face the world). */
export const ALL_INTERFACES = '0.0.0.0';

/** `HOST:PORT`, `:PORT` or `PORT` (all interfaces), `[::1]:PORT`, in the one grammar of @tunnel/protocol; port 0 picks a free one. Throws HostPortError. */
export function parseListen(spec: string | number): ListenAddress {
  return parseHostPort(spec, ALL_INTERFACES);
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
