// How the dashboard answers: its HTML pages with a strict CSP, JSON, the
// static script and stylesheet, and bounded request bodies.

import type http from 'node:http';
import { ApiError } from '../control/api-error.js';
import { readBody } from '../control/read-body.js';

/** Request bodies the dashboard takes (a login form, an action's JSON). */
export const MAX_BODY = 8 * 1024;

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export function html(res: http.ServerResponse, status: number, body: string): boolean {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'same-origin',
    'x-frame-options': 'DENY',
  });
  res.end(body);
  return true;
}

export function json(res: http.ServerResponse, status: number, body: unknown): boolean {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
  return true;
}

export function asset(res: http.ServerResponse, type: string, body: string): boolean {
  res.writeHead(200, { 'content-type': type, 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff' });
  res.end(body);
  return true;
}

export async function readText(req: http.IncomingMessage, limit = MAX_BODY): Promise<string> {
  const body = await readBody(req, limit);
  if (body === null) throw new ApiError(413, 'body_too_large', 'request body too large');
  return body.toString('utf8');
}

/** An action's JSON body: an object (empty body: {}). */
export async function readJsonObject(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const text = await readText(req);
  if (text.length === 0) return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new ApiError(400, 'bad_json', 'request body is not valid JSON');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ApiError(400, 'bad_request', 'request body must be a JSON object');
  return v as Record<string, unknown>;
}
