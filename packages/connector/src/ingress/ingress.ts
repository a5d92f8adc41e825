// Compiled ingress rules: which rule serves a request. Called once per proxied
// request, so everything that can be is computed at compile time (lower-cased
// hosts, wildcard suffixes, compiled regexes, the result objects themselves)
// and the match loop allocates nothing.
//
// Semantics are cloudflared's: rules are tried in order and the first match
// wins; a rule matches when both its hostname (exact, or `*.suffix` for any
// depth of subdomain but not the bare suffix) and its path regex (unanchored,
// against the path without the query string) match; the last rule is a
// catch-all, so every request matches something.

import { compilePathPattern, isCatchAll, resolveOriginRequest, serviceToString } from './config-values.js';
import type { IngressRule, OriginRequestConfig, Service } from './config-types.js';

export interface CompiledRule {
  readonly hostname: string | undefined;
  readonly path: string | undefined;
  readonly service: Service;
  /** The top-level originRequest with this rule's overrides applied. */
  readonly originRequest: OriginRequestConfig;
  readonly line: number | undefined;
}

export interface IngressMatch {
  readonly rule: CompiledRule;
  /** 0-based position in the rule list. */
  readonly index: number;
}

export interface Ingress {
  readonly rules: readonly CompiledRule[];
  /**
   * The first rule matching a request. `host` is the Host header as received
   * (any case, optional `:port`); `path` is the request target's path (a query
   * string, if present, is ignored).
   */
  match(host: string, path: string): IngressMatch;
}

// How a rule's hostname is matched (small ints keep the loop monomorphic).
const ANY_HOST = 0;
const EXACT_HOST = 1;
/** `*.example.com`: the host ends with `.example.com` and is longer. */
const SUFFIX_HOST = 2;
type HostMatch = typeof ANY_HOST | typeof EXACT_HOST | typeof SUFFIX_HOST;

/**
 * Compile rules for matching. Throws if the list is empty or the catch-all is
 * not exactly the last rule: parseConfig reports those with file positions,
 * this guards rules built any other way.
 */
export function compileIngress(rules: readonly IngressRule[], topOriginRequest: OriginRequestConfig): Ingress {
  if (rules.length === 0) throw new Error('ingress: no rules (the last rule must be a catch-all)');
  rules.forEach((r, i) => {
    const last = i === rules.length - 1;
    if (last && !isCatchAll(r)) throw new Error(`ingress[${i}]: the last rule must be a catch-all (no hostname, no path)`);
    if (!last && isCatchAll(r)) throw new Error(`ingress[${i}]: a catch-all rule must be the last rule`);
  });
  return new CompiledIngress(rules, topOriginRequest);
}

class CompiledIngress implements Ingress {
  readonly rules: readonly CompiledRule[];
  // Parallel arrays: the loop reads small monomorphic values, not rule objects.
  private readonly hostKind: HostMatch[];
  private readonly host: string[];
  private readonly pathRe: (RegExp | undefined)[];
  private readonly results: IngressMatch[];
  private readonly anyPathRule: boolean;

  constructor(rules: readonly IngressRule[], top: OriginRequestConfig) {
    this.rules = rules.map((r) =>
      Object.freeze({
        hostname: r.hostname,
        path: r.path,
        service: r.service,
        originRequest: resolveOriginRequest(r.originRequest, top),
        line: r.line,
      }),
    );
    this.hostKind = rules.map((r) =>
      r.hostname === undefined ? ANY_HOST : r.hostname.startsWith('*.') ? SUFFIX_HOST : EXACT_HOST,
    );
    // Hostnames from parseConfig are already lower-case; rules built by hand may not be.
    this.host = rules.map((r) => (r.hostname === undefined ? '' : r.hostname.toLowerCase().replace(/^\*\./, '.')));
    this.pathRe = rules.map((r) => (r.path === undefined ? undefined : compilePathPattern(r.path)));
    this.anyPathRule = this.pathRe.some((re) => re !== undefined);
    this.results = this.rules.map((rule, index) => Object.freeze({ rule, index }));
  }

  match(host: string, path: string): IngressMatch {
    const h = normalizeHost(host);
    const p = this.anyPathRule ? withoutQuery(path) : path;
    const n = this.hostKind.length;
    for (let i = 0; i < n; i++) {
      const kind = this.hostKind[i];
      if (kind === EXACT_HOST) {
        if (h !== this.host[i]) continue;
      } else if (kind === SUFFIX_HOST) {
        const suffix = this.host[i]!;
        if (h.length <= suffix.length || !h.endsWith(suffix)) continue;
      }
      const re = this.pathRe[i];
      if (re !== undefined && !re.test(p)) continue;
      return this.results[i]!;
    }
    // Unreachable: compileIngress guarantees the last rule is a catch-all.
    return this.results[n - 1]!;
  }
}

/** Lower-case and drop a `:port` (keeping a bracketed IPv6 literal whole). */
function normalizeHost(host: string): string {
  let end = host.length;
  if (host.charCodeAt(0) === 0x5b /* [ */) {
    const close = host.indexOf(']');
    if (close > 0) end = close + 1;
  } else {
    const colon = host.indexOf(':');
    // More than one colon: an unbracketed IPv6 address, which has no port.
    if (colon >= 0 && host.indexOf(':', colon + 1) < 0) end = colon;
  }
  return (end === host.length ? host : host.slice(0, end)).toLowerCase();
}

function withoutQuery(path: string): string {
  const q = path.indexOf('?');
  return q < 0 ? path : path.slice(0, q);
}

/**
 * Multi-line description for the CLI (`ingress validate`, `ingress rule`), in
 * cloudflared's layout. Rules are numbered from 1 for humans; `index` is 0-based.
 */
export function describeRule(rule: Pick<CompiledRule, 'hostname' | 'path' | 'service'>, index: number): string {
  const lines = [`rule #${index + 1}`];
  if (rule.hostname !== undefined) lines.push(`\thostname: ${rule.hostname}`);
  if (rule.path !== undefined) lines.push(`\tpath: ${rule.path}`);
  lines.push(`\tservice: ${serviceToString(rule.service)}`);
  return lines.join('\n');
}

export interface RuleForUrl {
  /** 0-based. */
  readonly index: number;
  readonly hostname: string | undefined;
  readonly path: string | undefined;
  readonly service: string;
  readonly rule: CompiledRule;
}

/**
 * `tunnel ingress rule URL`: which rule would serve this URL. Throws with a
 * hint when the argument has no hostname (usually a missing scheme).
 */
export function ruleForUrl(ingress: Ingress, url: string): RuleForUrl {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (parsed === undefined || parsed.hostname === '' || !/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    throw new Error(`"${url}" is not a URL with a hostname; try e.g. https://app.example.com/path`);
  }
  const { rule, index } = ingress.match(parsed.host, parsed.pathname);
  return { index, hostname: rule.hostname, path: rule.path, service: serviceToString(rule.service), rule };
}
