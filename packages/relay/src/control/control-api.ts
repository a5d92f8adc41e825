import http from 'node:http';
import { z } from 'zod';
import type { Logger } from 'pino';
import { ACCESS_JWKS_PATH, type AccountClaims } from '@tunnel/protocol';
import { accessApi } from '../access/access-api.js';
import { StoreError } from '../store/types.js';
import { ApiError, decodeSegment } from './api-error.js';
import { authenticateAccount, authenticateOperator } from './control-auth.js';
import { stripV4Mapped } from '../edge/client-ip.js';
import type { ZoneClaimOptions } from '../zones/zone-claims.js';
import type { OperatorKeyGuard } from './operator-key-guard.js';
import type { LoginAdmissions } from './login-admission.js';
import { policyOf, type Issuer } from './issued-credentials.js';
import { readJson, send } from './json-http.js';
import { CONTROL_ROUTES, type Call, type ControlRoute } from './control-routes.js';

// The CLI, the dashboard and quick tunnels use these too.
export { approveLogin, denyLogin, issueEnrollToken, normalizeCode } from './issued-credentials.js';
export { readJson, send } from './json-http.js';

export interface ControlApiDeps extends Issuer {
  log: Logger;
  relayId: string;
  /** Checks the operator key; absent when the relay has none. */
  operatorGuard?: OperatorKeyGuard;
  /** Pending-login ceilings; absent: none. */
  logins?: LoginAdmissions;
  loginTtlMs: number;
  /** Health turns 503 while the relay drains, so load balancers stop sending. */
  isDraining?: () => boolean;
  /** Self-service zone claims by DNS TXT challenge; off when undefined. */
  zoneClaims?: ZoneClaimOptions;
  /** The Access assertion keys (`/.well-known/tunnel-access/certs`); absent: not served. */
  accessJwks?: () => unknown;
  /** Extra routes (dashboard, metrics); return true when handled. */
  extra?: (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => Promise<boolean> | boolean;
}

/**
 * The relay's control API (JSON over HTTP): login sessions, accounts,
 * tunnels, routes, tokens, connector listings, the live relay list.
 * Every error is `{error: {code, message}}` with a stable code.
 */
export function createControlServer(d: ControlApiDeps): http.Server {
  return http.createServer(controlRequestHandler(d));
}

/** The control API's routes, for a server the relay builds (HTTPS when it has certificates). */
export function controlRequestHandler(d: ControlApiDeps): http.RequestListener {
  return (req, res) => {
    handle(d, req, res).catch((e: unknown) => {
      const err = toApiError(e);
      if (err.status >= 500) d.log.error({ err: (e as Error).message, path: req.url }, 'control API error');
      if (err.retryAfterS !== undefined && !res.headersSent) res.setHeader('retry-after', String(err.retryAfterS));
      send(res, err.status, err.toJSON());
    });
  };
}

export function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof StoreError) {
    switch (e.code) {
      case 'CONFLICT':
        return new ApiError(409, 'conflict', e.message);
      case 'NOT_FOUND':
        return new ApiError(404, 'not_found', e.message);
      case 'UNAVAILABLE':
        return new ApiError(503, 'store_unavailable', `the fleet store is unavailable: ${e.message}`);
      default:
        return new ApiError(500, 'store_error', e.message);
    }
  }
  if (e instanceof z.ZodError) {
    const first = e.issues[0];
    return new ApiError(400, 'bad_request', first ? `${first.path.join('.') || 'body'}: ${first.message}` : 'invalid request');
  }
  return new ApiError(500, 'internal', 'internal error');
}

const TABLE = CONTROL_ROUTES.map((r) => ({ route: r, segments: r.path.split('/').filter(Boolean) }));

/** The route for `method` and the %-decoded path segments, with its `:name` segments. */
function match(method: string, parts: readonly string[]): { route: ControlRoute; params: Record<string, string> } | undefined {
  for (const { route, segments } of TABLE) {
    if (route.method !== method || segments.length !== parts.length) continue;
    const params: Record<string, string> = {};
    if (segments.every((s, i) => (s.startsWith(':') ? ((params[s.slice(1)] = parts[i]!), true) : s === parts[i]))) return { route, params };
  }
  return undefined;
}

async function handle(d: ControlApiDeps, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://control');
  const p = url.pathname.replace(/\/+$/, '') || '/';
  const parts = p.split('/').filter(Boolean).map(decodeSegment);
  const m = req.method ?? 'GET';

  if (p === '/healthz') {
    const draining = d.isDraining?.() ?? false;
    return send(res, draining ? 503 : 200, { status: draining ? 'draining' : 'ok', relayId: d.relayId });
  }
  if (p === ACCESS_JWKS_PATH && m === 'GET' && d.accessJwks) {
    const text = JSON.stringify(d.accessJwks());
    res.writeHead(200, { 'content-type': 'application/jwk-set+json', 'content-length': Buffer.byteLength(text), 'cache-control': 'public, max-age=300' });
    return void res.end(text);
  }
  if (parts[0] !== 'v1') {
    if (d.extra && (await d.extra(req, res, url))) return;
    throw new ApiError(404, 'not_found', `no such endpoint ${m} ${p}`);
  }
  const found = match(m, parts);
  if (!found) {
    // An unknown endpoint is answered only to a caller who may ask there, so
    // a probe without credentials learns nothing of what exists.
    if (parts[1] === 'operator') await operator(d, req);
    else {
      // Access policies, service tokens and identity providers (access/access-api.ts).
      const access = await accessApi(d.store, await account(d, req), m, parts, url.searchParams, () => readJson(req));
      if (access) return send(res, access.status, access.body);
    }
    throw new ApiError(404, 'not_found', `no such endpoint ${m} ${p}`);
  }
  const { route, params } = found;
  const call: Call = { d, req, res, url, params };
  switch (route.access) {
    case 'public':
      return route.handle(call);
    case 'operator':
      await operator(d, req);
      return route.handle(call);
    case 'account':
      return route.handle({ ...call, who: await account(d, req) });
  }
}

function operator(d: ControlApiDeps, req: http.IncomingMessage): Promise<void> {
  return authenticateOperator(d.operatorGuard, stripV4Mapped(req.socket.remoteAddress ?? ''), req.headers.authorization);
}

function account(d: ControlApiDeps, req: http.IncomingMessage): Promise<AccountClaims> {
  return authenticateAccount(d.store, d.keys.publicKey, req.headers.authorization, policyOf(d));
}
