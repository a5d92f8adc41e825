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

/** RFC 9110 §5.6.2 token (header names, methods, Connection options). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/**
 * A char a field value (RFC 9110 §5.5) or reason phrase (RFC 9112 §4) may not
 * hold: CTLs other than HTAB (so CR, LF and NUL), DEL, and anything above
 * latin1, which the wire cannot carry. Both grammars are HTAB / SP / VCHAR /
 * obs-text.
 */
const BAD_VALUE_CHAR = /[\x00-\x08\x0a-\x1f\x7f\u0100-\uffff]/;
/** origin-form (RFC 9112 §3.2.1): absolute-path [ "?" query ]; no space, CTL, DEL or fragment. */
const ORIGIN_FORM = /^\/[^\x00-\x20\x7f#\u0100-\uffff]*$/;
/** uri-host [ ":" port ]: reg-name, IPv4 or IP-literal chars only (no '/', '@', '?', '#', space). */
const HOST = /^[A-Za-z0-9.\-_~!$&'()*+,;=%:[\]]+$/;
const DIGITS = /^[0-9]{1,15}$/;
/** A Transfer-Encoding whose last coding is chunked (RFC 9112 §6.3: otherwise a request cannot be framed). */
const ENDS_CHUNKED = /(?:^|,)[ \t]*chunked[ \t]*$/i;

export function isToken(s: string): boolean {
  return TOKEN.test(s);
}

/** A legal field value or reason phrase: no CR, LF, NUL or other CTL but HTAB, no DEL. */
export function isFieldValue(s: string): boolean {
  return !BAD_VALUE_CHAR.test(s);
}

export function isOriginForm(target: string): boolean {
  return ORIGIN_FORM.test(target);
}

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
 * The lower-cased options named in a head's Connection headers (which are
 * themselves hop-by-hop, so the headers they name are dropped too). Null when
 * there is no Connection header: the common case allocates nothing.
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
    if (t !== '' && TOKEN.test(t)) (into ??= new Set()).add(t);
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

/** Content-Length and Transfer-Encoding of a head, after the conflict rules of RFC 9112 §6.3. */
function lengthOf(headers: HeaderPairs): { ok: true; length: number; chunked: boolean } | { ok: false; reason: string } {
  let length = -1;
  let te: string | null = null;
  for (let i = 0; i < headers.length; i++) {
    const [name, value] = headers[i]!;
    if (name.length === 14 && name.toLowerCase() === 'content-length') {
      const v = value.trim();
      if (!DIGITS.test(v)) return { ok: false, reason: `Content-Length ${JSON.stringify(value.slice(0, 40))} is not a number` };
      const n = Number(v);
      if (length !== -1 && n !== length) return { ok: false, reason: `two different Content-Lengths (${length} and ${n})` };
      length = n;
    } else if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') {
      te = te === null ? value : `${te},${value}`;
    }
  }
  if (te !== null && length !== -1) return { ok: false, reason: 'both Content-Length and Transfer-Encoding' };
  if (te !== null && !ENDS_CHUNKED.test(te)) return { ok: false, reason: `Transfer-Encoding ${JSON.stringify(te.slice(0, 40))} does not end in chunked` };
  return { ok: true, length, chunked: te !== null };
}

function checkFields(headers: HeaderPairs): string | null {
  for (let i = 0; i < headers.length; i++) {
    const [name, value] = headers[i]!;
    if (!TOKEN.test(name)) return `header name ${JSON.stringify(name.slice(0, 40))} is not a token`;
    if (BAD_VALUE_CHAR.test(value)) return `header ${name.slice(0, 40)} has a forbidden character in its value`;
  }
  return null;
}

/**
 * A request head as it may cross the tunnel: method token (never CONNECT),
 * origin-form target (or `*` for OPTIONS), exactly one Host header equal to
 * `host`, legal names and values, unambiguous body length.
 */
export function checkRequestHead(h: RequestHead): HeadCheck<{ body: BodyFraming }> {
  if (!TOKEN.test(h.method)) return { ok: false, reason: 'method is not a token' };
  if (h.method === 'CONNECT') return { ok: false, reason: 'CONNECT is not carried by the tunnel' };
  if (!ORIGIN_FORM.test(h.path) && !(h.path === '*' && h.method === 'OPTIONS')) {
    return { ok: false, reason: 'request target is not origin-form' };
  }
  if (!HOST.test(h.host)) return { ok: false, reason: 'Host is empty or not a host[:port]' };
  const bad = checkFields(h.headers);
  if (bad !== null) return { ok: false, reason: bad };
  let hosts = 0;
  for (let i = 0; i < h.headers.length; i++) {
    const pair = h.headers[i]!;
    if (pair[0].length === 4 && pair[0].toLowerCase() === 'host') {
      hosts++;
      if (pair[1] !== h.host) return { ok: false, reason: 'Host header differs from the head host' };
    }
  }
  if (hosts !== 1) return { ok: false, reason: hosts === 0 ? 'no Host header' : 'more than one Host header' };
  const len = lengthOf(h.headers);
  if (!len.ok) return len;
  const body = len.chunked ? STREAM_BODY : len.length > 0 ? { kind: 'length' as const, length: len.length } : NO_BODY;
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
  const bad = checkFields(h.headers);
  if (bad !== null) return { ok: false, reason: bad };
  const len = lengthOf(h.headers);
  if (!len.ok) return len;

  let body: BodyFraming;
  if (status === 101) body = NO_BODY;
  else if (status === 204) {
    if (len.length > 0 || len.chunked) return { ok: false, reason: '204 with a body length' };
    body = NO_BODY;
  } else if (status === 304 || ctx.method === 'HEAD') body = NO_BODY;
  else if (len.length >= 0) body = { kind: 'length', length: len.length };
  else body = STREAM_BODY;

  const named = connectionOptions(h.headers);
  const keepUpgrade = status === 101;
  const out: HeaderPairs = [];
  let sawLength = false;
  for (let i = 0; i < h.headers.length; i++) {
    const pair = h.headers[i]!;
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
