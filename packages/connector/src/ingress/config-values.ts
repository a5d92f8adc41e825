// The values of config.yml (and of `--url`) that have a grammar of their own:
// a rule's service and hostname, its path regex, and the ingress list the
// connector runs with. Each throws an Error with a one-line reason, which
// config.ts places at the value's line.

import { ConfigError } from '@tunnel/host';
import { formatHostPort, HostnameError, normalizeHostname, type HostnameFault } from '@tunnel/protocol';
import { ORIGIN_REQUEST_DEFAULTS, type ConnectorConfig, type IngressRule, type OriginRequestConfig, type OriginRequestOverrides, type Service } from './config-types.js';

export const SERVICE_SCHEMES = 'http://, https://, unix:, tcp://, http_status:NNN, hello_world';

/** Parse a rule's `service`. Throws an Error with a one-line reason. */
export function parseService(text: string): Service {
  const lower = text.toLowerCase();
  if (lower === 'hello_world') return { kind: 'hello_world' };
  if (lower.startsWith('http_status:')) {
    const code = text.slice('http_status:'.length);
    const status = /^\d{3}$/.test(code) ? Number(code) : NaN;
    if (!(status >= 100 && status <= 599)) {
      throw new Error(`invalid status code "${code}" in "${text}" (expected http_status:NNN with NNN from 100 to 599)`);
    }
    return { kind: 'status', status };
  }
  if (lower.startsWith('unix:')) {
    const socketPath = text.slice('unix:'.length);
    if (socketPath === '') throw new Error(`"${text}" has no socket path (expected unix:/path/to.sock)`);
    return { kind: 'unix', socketPath };
  }
  if (lower.startsWith('http://') || lower.startsWith('https://')) {
    const url = parseUrl(text);
    if (url.hostname === '') throw new Error(`"${text}" has no host (expected http://host[:port][/path])`);
    if (url.username !== '' || url.password !== '') throw new Error(`"${text}": credentials in a service URL are not supported`);
    if (url.search !== '' || url.hash !== '') throw new Error(`"${text}": a service URL cannot have a query or fragment`);
    return { kind: 'http', url };
  }
  if (lower.startsWith('tcp://')) {
    const url = parseUrl(text);
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (host === '' || url.port === '' || url.port === '0') throw new Error(`"${text}" needs a host and a port (expected tcp://host:port)`);
    if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '') {
      throw new Error(`"${text}": a tcp service cannot have a path (expected tcp://host:port)`);
    }
    return { kind: 'tcp', host, port: Number(url.port) };
  }
  throw new Error(`unknown service scheme "${text}" (expected ${SERVICE_SCHEMES})`);
}

function parseUrl(text: string): URL {
  try {
    return new URL(text);
  } catch {
    throw new Error(`"${text}" is not a valid URL`);
  }
}

/** Canonical text of a service, as a user would write it (for `ingress rule` output and logs). */
export function serviceToString(s: Service): string {
  switch (s.kind) {
    case 'http':
      // URL.href adds a trailing "/" to a bare origin; show what the user wrote.
      return s.url.pathname === '/' ? s.url.origin : s.url.href;
    case 'unix':
      return `unix:${s.socketPath}`;
    case 'tcp':
      return `tcp://${formatHostPort(s)}`;
    case 'status':
      return `http_status:${s.status}`;
    case 'hello_world':
      return 'hello_world';
  }
}

// Hints only a rule hostname needs: what to use instead in a config file.
const RULE_HINT: Partial<Record<HostnameFault, string>> = {
  'not-bare': ' (use the path key to match paths)',
  port: " (matching ignores the request's port)",
};

/** Normalise a rule hostname (the grammar is protocol's, shared with the relay); '' and '*' (match anything) become undefined. */
export function parseHostname(text: string): string | undefined {
  const host = text.trim();
  if (host === '' || host === '*') return undefined;
  try {
    return normalizeHostname(host);
  } catch (e) {
    if (e instanceof HostnameError) throw new Error(e.message + (RULE_HINT[e.fault] ?? ''));
    throw e;
  }
}

/**
 * Compile a rule's path regex. cloudflared's paths are Go (RE2) regexes, which
 * JavaScript mostly shares; the one common difference, a leading `(?i)`, is
 * translated to the `i` flag. No `g`/`y` flag: those make `test()` stateful.
 */
export function compilePathPattern(source: string): RegExp {
  return source.startsWith('(?i)') ? new RegExp(source.slice(4), 'i') : new RegExp(source);
}

/** A catch-all rule matches every request: no hostname (or `*`) and no path. */
export function isCatchAll(rule: Pick<IngressRule, 'hostname' | 'path'>): boolean {
  return rule.hostname === undefined && rule.path === undefined;
}

/**
 * The single rule cloudflared builds for `--url`: a catch-all to that service.
 * A URL without a scheme (`localhost:8000`) means http://, as in cloudflared.
 */
export function singleServiceIngress(url: string): IngressRule[] {
  const hasScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(url) || /^(unix:|http_status:|hello_world$)/i.test(url);
  try {
    return [{ service: parseService(hasScheme ? url : `http://${url}`), originRequest: {} }];
  } catch (err) {
    throw new ConfigError('--url', [{ line: 0, column: 0, message: (err as Error).message }]);
  }
}

/**
 * The rules to run with: the config's, or the `--url` one. As in cloudflared,
 * both at once is an error (which would win is not obvious), and neither is too.
 */
export function resolveIngress(config: ConnectorConfig | undefined, url: string | undefined): readonly IngressRule[] {
  const rules = config?.ingress ?? [];
  if (url !== undefined && url !== '') {
    if (rules.length > 0) {
      throw new ConfigError(config!.source, [
        { line: rules[0]!.line ?? 0, column: 1, message: '--url cannot be used together with ingress rules; remove one of them' },
      ]);
    }
    return singleServiceIngress(url);
  }
  if (rules.length === 0) {
    throw new ConfigError(config?.source ?? '--url', [
      { line: 0, column: 0, message: 'no ingress rules: add an "ingress:" list to the config file or pass --url' },
    ]);
  }
  return rules;
}

/** Merge per-rule overrides over a resolved config (keys a rule does not set are inherited). */
export function resolveOriginRequest(
  overrides: OriginRequestOverrides | undefined,
  base: OriginRequestConfig = ORIGIN_REQUEST_DEFAULTS,
): OriginRequestConfig {
  const set = Object.entries(overrides ?? {}).filter(([, v]) => v !== undefined);
  if (set.length === 0) return base; // rules without overrides share the top-level object
  return Object.freeze({ ...base, ...Object.fromEntries(set) }) as OriginRequestConfig;
}
