import { STATUS_CODES } from 'node:http';

/**
 * The one shape of every error the tunnel answers itself, relay or connector:
 * HTML for a browser, JSON for everything else, with the same fields, so a
 * person sees a page and a program gets `{error: {status, code, source,
 * message, requestId}}` whichever side failed.
 */

/** Where a failure happened: a 502 must say whether the relay, the connector or the origin failed. */
export type ErrorSource = 'relay' | 'connector' | 'origin';

export interface TunnelErrorInfo {
  status: number;
  /** Stable machine-readable code, e.g. `tunnel_offline`. */
  code: string;
  source: ErrorSource;
  message: string;
}

/** Ours, for the statuses node has no phrase for (it would write `530 unknown`). */
const OWN_REASONS: Readonly<Record<number, string>> = { 530: 'Tunnel Offline' };

export function reasonPhrase(status: number): string {
  return OWN_REASONS[status] ?? STATUS_CODES[status] ?? 'Error';
}

/**
 * A browser asks for text/html; an API client names application/json or
 * nothing in particular. JSON wins when both are named (a program that
 * also takes HTML still parses JSON better).
 */
export function wantsHtml(accept: string | undefined): boolean {
  const a = (accept ?? '').toLowerCase();
  return a.includes('text/html') && !a.includes('application/json');
}

export function renderTunnelError(info: TunnelErrorInfo, accept: string | undefined, requestId: string): { type: string; body: string } {
  if (wantsHtml(accept)) {
    const title = `${info.status} ${reasonPhrase(info.status)}`;
    return {
      type: 'text/html; charset=utf-8',
      body: `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}code{color:#666}</style></head><body><h1>${esc(title)}</h1><p>${esc(info.message)}</p><p><code>error: ${esc(info.code)} · source: ${info.source} · request id: ${esc(requestId)}</code></p></body></html>\n`,
    };
  }
  return {
    type: 'application/json; charset=utf-8',
    body: JSON.stringify({ error: { status: info.status, code: info.code, source: info.source, message: info.message, requestId } }) + '\n',
  };
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
