// The one place that decides whether an HTTP head is fit to cross the tunnel
// and what framing its body has. Both ends use it on what their peer sends:
// the relay on request heads it builds from clients and on response heads from
// connectors, the connector on request heads from relays and on answers from
// origins. Everything Node would throw on (`writeHead`, `setHeader`,
// `http.request`) is refused here first, so a bad head ends one request with a
// reason instead of a process.
//
// One precompiled regex per field and no per-header allocation on the accept
// path except the filtered header list the caller needs anyway: this runs on
// every request.

import type { HeaderPairs, RequestHead, ResponseHead } from './heads.js';

/** RFC 9110 §5.6.2 tchar, as a lookup table: names are short, and a table walk beats a regex on them. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;

/** RFC 9110 §5.6.2 token (header names, methods, Connection options): 1*tchar. */
export function isToken(s: string): boolean {
  const n = s.length;
  if (n === 0) return false;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff || TCHAR[c] === 0) return false;
  }
  return true;
}
/**
 * A char a field value (RFC 9110 §5.5) or reason phrase (RFC 9112 §4) may not
 * hold: CTLs other than HTAB (so CR, LF and NUL), DEL, and anything above
 * latin1, which the wire cannot carry. Both grammars are HTAB / SP / VCHAR /
 * obs-text.
 */
const BAD_VALUE_CHAR = /[^\t\x20-\x7e\x80-\xff]/;
/** origin-form (RFC 9112 §3.2.1): absolute-path [ "?" query ]; no space, CTL, DEL or fragment. */
const ORIGIN_FORM = /^\/[^\x00-\x20\x7f#\u0100-\uffff]*$/;
/** uri-host [ ":" port ]: reg-name, IPv4 or IP-literal chars only (no '/', '@', '?', '#', space). */
const HOST = /^[A-Za-z0-9.\-_~!$&'()*+,;=%:[\]]+$/;
const DIGITS = /^[0-9]{1,15}$/;
/** A Transfer-Encoding whose last coding is chunked (RFC 9112 §6.3: otherwise a request cannot be framed). */
const ENDS_CHUNKED = /(?:^|,)[ \t]*chunked[ \t]*$/i;

/** A legal field value or reason phrase: no CR, LF, NUL or other CTL but HTAB, no DEL. */
export function isFieldValue(s: string): boolean {
  return !BAD_VALUE_CHAR.test(s);
}

export function isOriginForm(target: string): boolean {
  return ORIGIN_FORM.test(target);
}

/**
 * Methods a hop may send twice: the safe ones (RFC 9110 §9.2.1), so a retry
 * after a connection the far side reset before answering cannot repeat an
 * effect. PUT and DELETE are idempotent too, but a retry may still race
 * another client's write, so neither end retries them.
 */
export const RETRYABLE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy ones still seen in
 * the wild): they describe one connection, so no hop passes them on.
 * `proxy-authorization` is a credential for a proxy, never for the origin.
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
]);

/**
 * The lower-cased options named in a head's Connection headers, less those
 * already hop-by-hop: Connection is itself hop-by-hop, so the headers it
 * names are dropped too. Null when it names nothing more (`keep-alive`,
 * `close`, `upgrade`): the common case allocates only the split.
 */
export function connectionOptions(headers: HeaderPairs): Set<string> | null {
  let named: Set<string> | null = null;
  for (let i = 0; i < headers.length; i++) {
    const pair = headers[i]!;
    if (pair[0].length === 10 && pair[0].toLowerCase() === 'connection') named = parseConnection(pair[1], named);
  }
  return named;
}

/** The options of one Connection value (e.g. node's joined `req.headers.connection`), added to `into`. */
export function parseConnection(value: string | undefined, into: Set<string> | null = null): Set<string> | null {
  if (value === undefined) return into;
  for (const part of value.split(',')) {
    const t = part.trim().toLowerCase();
    // keep-alive, close, upgrade: already hop-by-hop (or no header at all), so the usual value names nothing more.
    if (t !== '' && t !== 'close' && !HOP_BY_HOP.has(t) && isToken(t)) (into ??= new Set()).add(t);
  }
  return into;
}

/**
 * Whether a header stops at this hop: hop-by-hop, or named in Connection.
 * `lowerName` must be lower-cased; `named` comes from connectionOptions().
 */
export function isHopHeader(lowerName: string, named: Set<string> | null): boolean {
  return HOP_BY_HOP.has(lowerName) || (named !== null && named.has(lowerName));
}

/**
 * How a body is delimited. Inside the tunnel a body always ends with its
 * stream's FIN; this says what the far side must check it against and how it
 * may frame it for the next hop.
 */
export type BodyFraming =
  | { readonly kind: 'none' } // no body may follow (HEAD, 204, 304, or a bodyless request)
  | { readonly kind: 'length'; readonly length: number } // exactly this many bytes
  | { readonly kind: 'stream' }; // unknown length: chunked (or close-delimited) on the next hop

const NO_BODY: BodyFraming = { kind: 'none' };
const STREAM_BODY: BodyFraming = { kind: 'stream' };

export type HeadCheck<T> = ({ ok: true } & T) | { ok: false; reason: string };

/** Lengths of the names scan() must look at closer; any other name is passed over without lower-casing it. */
const WATCHED_LENGTH = new Uint8Array(32);
for (const n of [...HOP_BY_HOP, 'host', 'content-length']) WATCHED_LENGTH[n.length] = 1;

interface Scan {
  /** First Content-Length (-1: none); a second, different one is a fault. */
  length: number;
  /** Transfer-Encoding values joined, or null. */
  te: string | null;
  hosts: number;
  /** The first Host value. */
  host: string | null;
  /** A header the next hop must not get is present (hop-by-hop, a repeated or padded length). */
  dropSome: boolean;
  connection: boolean;
}

/**
 * One pass over a head's fields: names are tokens, values legal, and the
 * framing headers collected under the conflict rules of RFC 9112 §6.3.
 * Returns the fault, or the scan.
 */
function scan(headers: HeaderPairs): Scan | string {
  const r: Scan = { length: -1, te: null, hosts: 0, host: null, dropSome: false, connection: false };
  for (let i = 0; i < headers.length; i++) {
    const pair = headers[i]!;
    const name = pair[0];
    const value = pair[1];
    if (!isToken(name)) return `header name ${JSON.stringify(name.slice(0, 40))} is not a token`;
    if (BAD_VALUE_CHAR.test(value)) return `header ${name.slice(0, 40)} has a forbidden character in its value`;
    if (name.length >= 32 || WATCHED_LENGTH[name.length] === 0) continue;
    const lk = name.toLowerCase();
    if (lk === 'host') {
      if (r.hosts++ === 0) r.host = value;
    } else if (lk === 'content-length') {
      const v = value.trim();
      if (!DIGITS.test(v)) return `Content-Length ${JSON.stringify(value.slice(0, 40))} is not a number`;
      const n = Number(v);
      if (r.length !== -1) {
        if (n !== r.length) return `two different Content-Lengths (${r.length} and ${n})`;
        r.dropSome = true;
      }
      if (v !== value) r.dropSome = true;
      r.length = n;
    } else if (HOP_BY_HOP.has(lk)) {
      r.dropSome = true;
      if (lk === 'transfer-encoding') r.te = r.te === null ? value : `${r.te},${value}`;
      else if (lk === 'connection') r.connection = true;
    }
  }
  if (r.te !== null && r.length !== -1) return 'both Content-Length and Transfer-Encoding';
  if (r.te !== null && !ENDS_CHUNKED.test(r.te)) return `Transfer-Encoding ${JSON.stringify(r.te.slice(0, 40))} does not end in chunked`;
  return r;
}

/**
 * A request head as it may cross the tunnel: method token (never CONNECT),
 * origin-form target (or `*` for OPTIONS), exactly one Host header equal to
 * `host`, legal names and values, unambiguous body length.
 */
export function checkRequestHead(h: RequestHead): HeadCheck<{ body: BodyFraming }> {
  if (!isToken(h.method)) return { ok: false, reason: 'method is not a token' };
  if (h.method === 'CONNECT') return { ok: false, reason: 'CONNECT is not carried by the tunnel' };
  if (!ORIGIN_FORM.test(h.path) && !(h.path === '*' && h.method === 'OPTIONS')) {
    return { ok: false, reason: 'request target is not origin-form' };
  }
  if (!HOST.test(h.host)) return { ok: false, reason: 'Host is empty or not a host[:port]' };
  const r = scan(h.headers);
  if (typeof r === 'string') return { ok: false, reason: r };
  if (r.hosts !== 1) return { ok: false, reason: r.hosts === 0 ? 'no Host header' : 'more than one Host header' };
  if (r.host !== h.host) return { ok: false, reason: 'Host header differs from the head host' };
  const body = r.te !== null ? STREAM_BODY : r.length > 0 ? { kind: 'length' as const, length: r.length } : NO_BODY;
  return { ok: true, body };
}

export interface ResponseContext {
  /** The request's method: a HEAD answer has no body. */
  method: string;
  /** The request asked to upgrade: a 101 is then the one legal 1xx answer. */
  upgrade: boolean;
}

/**
 * A response head as it may be passed to the next hop. On success `headers`
 * is the list to send: hop-by-hop and Connection-named headers dropped, one
 * Content-Length at most (the caller decides chunking); for a 101 the Upgrade
 * header is kept and the caller adds `Connection: Upgrade`. `body` is what the
 * body that follows must match.
 */
export function checkResponseHead(h: ResponseHead, ctx: ResponseContext): HeadCheck<{ headers: HeaderPairs; body: BodyFraming }> {
  const status = h.status;
  if (!Number.isInteger(status) || status < 100 || status > 599) return { ok: false, reason: `status ${status} is outside 100..599` };
  if (status < 200 && !(status === 101 && ctx.upgrade)) {
    return { ok: false, reason: status === 101 ? '101 to a request that did not ask to upgrade' : `interim status ${status} as the final answer` };
  }
  if (BAD_VALUE_CHAR.test(h.statusText)) return { ok: false, reason: 'status text has a forbidden character' };
  const r = scan(h.headers);
  if (typeof r === 'string') return { ok: false, reason: r };

  let body: BodyFraming;
  if (status === 101) body = NO_BODY;
  else if (status === 204) {
    if (r.length > 0 || r.te !== null) return { ok: false, reason: '204 with a body length' };
    body = NO_BODY;
  } else if (status === 304 || ctx.method === 'HEAD') body = NO_BODY;
  else if (r.length >= 0) body = { kind: 'length', length: r.length };
  else body = STREAM_BODY;

  // The common answer has nothing to drop: pass its list on as it is.
  if (!r.dropSome && !(status === 204 && r.length !== -1)) return { ok: true, headers: h.headers, body };
  const named = r.connection ? connectionOptions(h.headers) : null;
  const keepUpgrade = status === 101;
  const out: HeaderPairs = [];
  let sawLength = false;
  for (let i = 0; i < h.headers.length; i++) {
    const pair = h.headers[i]!;
    const len = pair[0].length;
    if (named === null && (len >= 32 || WATCHED_LENGTH[len] === 0)) {
      out.push(pair);
      continue;
    }
    const lk = pair[0].toLowerCase();
    if (lk === 'upgrade' && keepUpgrade) {
      out.push(pair);
      continue;
    }
    if (isHopHeader(lk, named)) continue;
    if (lk === 'content-length') {
      // A 204's (zero) length is dropped: it must not have one at all.
      if (sawLength || status === 204) continue;
      sawLength = true;
      out.push([pair[0], pair[1].trim()]);
      continue;
    }
    out.push(pair);
  }
  return { ok: true, headers: out, body };
}
