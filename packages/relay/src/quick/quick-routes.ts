// The control API's quick-tunnel endpoints, in front of the rest of it:
//   POST   /v1/quick           {connectorId}   anyone (per-IP limited) → a quick tunnel
//   POST   /v1/quick/renew     Bearer quick token                       → a fresh token
//   DELETE /v1/quick           Bearer quick token                       → hostname gone
//   GET    /v1/operator/quick  operator key                             → live quick tunnels
//   DELETE /v1/operator/quick/HOSTNAME-OR-ID  operator key              → kill one
// Answered even when quick tunnels are off, so a connector hears why.

import type http from 'node:http';
import { z } from 'zod';
import type { Logger } from 'pino';
import { ApiError, decodeSegment } from '../control/api-error.js';
import { authenticateOperator, bearer } from '../control/control-auth.js';
import { readJson, send, toApiError } from '../control/control-api.js';
import type { OperatorKeyGuard } from '../control/operator-key-guard.js';
import { stripV4Mapped } from '../edge/client-ip.js';
import type { QuickTunnels } from './quick-tunnels.js';

export interface QuickRoutesDeps {
  /** Null: quick tunnels are off on this relay. */
  quick: QuickTunnels | null;
  operatorGuard?: OperatorKeyGuard;
  log: Logger;
}

const CreateBody = z.object({ connectorId: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'connectorId: 1-64 letters, digits, dot, dash, underscore') });

export function withQuickRoutes(d: QuickRoutesDeps, inner: http.RequestListener): http.RequestListener {
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0]!.replace(/\/+$/, '');
    if (path !== '/v1/quick' && !path.startsWith('/v1/quick/') && path !== '/v1/operator/quick' && !path.startsWith('/v1/operator/quick/')) return inner(req, res);
    handle(d, req, res, path).catch((e: unknown) => {
      const err = toApiError(e);
      if (err.status >= 500) d.log.error({ err: (e as Error).message, path }, 'quick API error');
      if (err.retryAfterS !== undefined && !res.headersSent) res.setHeader('retry-after', String(err.retryAfterS));
      send(res, err.status, err.toJSON());
    });
  };
}

async function handle(d: QuickRoutesDeps, req: http.IncomingMessage, res: http.ServerResponse, path: string): Promise<void> {
  const m = req.method ?? 'GET';
  const ip = stripV4Mapped(req.socket.remoteAddress ?? '');
  if (path.startsWith('/v1/operator/')) {
    await authenticateOperator(d.operatorGuard, ip, req.headers.authorization);
    const quick = enabled(d);
    if (path === '/v1/operator/quick' && m === 'GET') return send(res, 200, { zone: quick.settings.zone, quick: await quick.list() });
    const ref = path.slice('/v1/operator/quick/'.length);
    if (ref && !ref.includes('/') && m === 'DELETE') {
      const hostname = await quick.kill(decodeSegment(ref));
      d.log.info({ event: 'quick-killed', hostname, ip }, `operator killed quick tunnel ${hostname}`);
      return send(res, 200, { deleted: hostname });
    }
    throw new ApiError(404, 'not_found', `no such endpoint ${m} ${path}`);
  }
  const quick = enabled(d);
  if (path === '/v1/quick' && m === 'POST') {
    const body = CreateBody.parse(await readJson(req));
    return send(res, 201, await quick.create(ip, body.connectorId));
  }
  if (path === '/v1/quick/renew' && m === 'POST') return send(res, 200, await quick.renew(bearer(req.headers.authorization)));
  if (path === '/v1/quick' && m === 'DELETE') return send(res, 200, { deleted: await quick.remove(bearer(req.headers.authorization)) });
  throw new ApiError(404, 'not_found', `no such endpoint ${m} ${path}`);
}

function enabled(d: QuickRoutesDeps): QuickTunnels {
  if (d.quick) return d.quick;
  throw new ApiError(
    403,
    'quick_disabled',
    'this relay does not offer quick tunnels (its operator can turn them on with `tunnel-relay serve --quick-zone ZONE`); publish with a named tunnel instead: tunnel login, tunnel create NAME, tunnel route dns NAME HOSTNAME, tunnel run',
  );
}
