import net from 'node:net';
import type { Logger } from 'pino';

/**
 * `tunnel run --url http://localhost:3000` with nothing listening there
 * connects fine to the relays and then answers every request 502: say so at
 * start, once, instead of leaving the user to find out from a browser. Only
 * a warning: the origin may well come up after the connector.
 */
export function warnIfOriginDown(url: string, log: Logger, timeoutMs = 2_000): Promise<void> {
  let host: string;
  let port: number;
  try {
    const u = new URL(url);
    if (!['http:', 'https:', 'tcp:'].includes(u.protocol)) return Promise.resolve();
    host = u.hostname.replace(/^\[|\]$/g, '');
    port = Number(u.port) || (u.protocol === 'https:' ? 443 : 80);
    if (u.protocol === 'tcp:' && !u.port) return Promise.resolve();
  } catch {
    return Promise.resolve(); // --url was checked where it was parsed
  }
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (problem?: string) => {
      sock.destroy();
      if (problem) {
        log.warn(
          { event: 'origin-unreachable', url, problem },
          `nothing answers at ${url} (${problem}): requests get a 502 until the origin listens there`,
        );
      }
      resolve();
    };
    sock.setTimeout(timeoutMs, () => done(`no connection within ${timeoutMs} ms`));
    sock.once('connect', () => done());
    sock.once('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message));
  });
}
