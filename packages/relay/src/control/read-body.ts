import type http from 'node:http';

/**
 * A request body read whole, for the small bodies the relay needs in hand
 * (control API JSON, dashboard forms, forwarded requests it may retry).
 * Null when it is over `limit` bytes; the request is then left destroyed.
 * Rejects when the client goes away before the end.
 */
export async function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > limit) return null;
    chunks.push(c);
  }
  return Buffer.concat(chunks, n);
}
