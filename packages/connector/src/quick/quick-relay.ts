// Which relay a bare `tunnel --url` asks: --relay, then --quick-relay /
// TUNNEL_QUICK_RELAY, then `quick-relay:` in TUNNEL_HOME/quick.yml (read only:
// quick tunnels write nothing there).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { ConfigError } from '../ingress/config.js';
import { tunnelHome } from '../cli/tunnel-home.js';

export function quickConfigPath(): string {
  return join(tunnelHome(), 'quick.yml');
}

/** A relay's control URL as given, checked: http(s), no path beyond `/`. */
export function checkRelayUrl(raw: string, where: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new ConfigError(where, [{ line: 0, column: 0, message: `${JSON.stringify(raw)} is not a URL (expected the relay's https://HOST[:PORT])` }]);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') {
    const hint = u.protocol === 'wss:' || u.protocol === 'ws:' ? ': a quick tunnel asks the relay\'s control API (https://…), not its connector endpoint' : '';
    throw new ConfigError(where, [{ line: 0, column: 0, message: `${raw}: expected an http(s):// relay URL${hint}` }]);
  }
  return u.origin;
}

/** The `quick-relay:` of TUNNEL_HOME/quick.yml, if the file exists. Errors name file:line. */
function fromFile(): string | undefined {
  const file = quickConfigPath();
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(file, [{ line: 0, column: 0, message: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` }]);
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  if (doc.errors.length) {
    const p = lc.linePos(doc.errors[0]!.pos[0]);
    throw new ConfigError(file, [{ line: p.line, column: p.col, message: `YAML syntax error: ${doc.errors[0]!.message}` }]);
  }
  const v: unknown = doc.toJS();
  if (v === null || v === undefined) return undefined;
  const relay = typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>)['quick-relay'] : undefined;
  const unknown = typeof v === 'object' && !Array.isArray(v) ? Object.keys(v as object).filter((k) => k !== 'quick-relay') : ['(top)'];
  if (unknown.length > 0 || typeof relay !== 'string') {
    const node = doc.contents as { range?: number[] } | null;
    const p = lc.linePos(node?.range?.[0] ?? 0);
    throw new ConfigError(file, [{ line: p.line, column: p.col, message: unknown.length > 0 ? `unknown key ${unknown[0]} (this file takes only quick-relay: URL)` : 'quick-relay: expected the relay URL, e.g. quick-relay: https://relay.example.com' }]);
  }
  return checkRelayUrl(relay, file);
}

export function resolveQuickRelay(o: { relay?: string; quickRelay?: string }): string | undefined {
  if (o.relay) return checkRelayUrl(o.relay, '--relay');
  if (o.quickRelay) return checkRelayUrl(o.quickRelay, '--quick-relay (or TUNNEL_QUICK_RELAY)');
  return fromFile();
}
