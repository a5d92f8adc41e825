import type http from 'node:http';
import { ApiError } from './api-error.js';
import { readBody } from './read-body.js';

const MAX_BODY = 64 * 1024;

/** A JSON answer; never cached (credentials and live state). */
export function send(res: http.ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return void res.end();
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

/** A JSON request body of at most 64 KiB; an empty body is `{}`. */
export async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const body = await readBody(req, MAX_BODY);
  if (body === null) throw new ApiError(413, 'body_too_large', 'request body over 64 KiB');
  if (body.length === 0) return {};
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new ApiError(400, 'bad_json', 'request body is not valid JSON');
  }
}
