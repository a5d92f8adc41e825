import http from 'node:http';
import type { HAManager } from '../ha/ha-manager.js';

export interface StatusServerOptions {
  ha: HAManager;
  connectorId: string;
  /** Prometheus text for `/metrics`. */
  metrics?: { text(): Promise<string>; readonly contentType: string };
  /** Extra routes served by the same listener. */
  extra?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean;
}

/**
 * `--metrics ADDR`: `/ready` is 200 once one connection is registered (503
 * before and whenever none is), `/healthcheck` answers while the process
 * runs, `/metrics` is the Prometheus text.
 */
export function createStatusServer(o: StatusServerOptions): http.Server {
  return http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/ready') {
      const ready = o.ha.readyConnections;
      const body = JSON.stringify({ status: ready > 0 ? 200 : 503, readyConnections: ready, connectorId: o.connectorId });
      res.writeHead(ready > 0 ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(body);
      return;
    }
    if (path === '/healthcheck') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('OK\n');
      return;
    }
    if (path === '/metrics' && o.metrics) {
      o.metrics.text().then(
        (text) => {
          res.writeHead(200, { 'content-type': o.metrics!.contentType, 'cache-control': 'no-store' });
          res.end(req.method === 'HEAD' ? undefined : text);
        },
        (e: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`metrics failed: ${e.message}\n`);
        },
      );
      return;
    }
    if (o.extra?.(req, res)) return;
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  });
}
