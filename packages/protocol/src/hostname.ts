// One hostname grammar for the whole system: a connector's ingress rules, the
// relay's routes and zones, and the control API all accept exactly the same
// names, so a name one of them takes is never refused by another.
//
// Grammar: an exact name (`app.example.com`) or a wildcard over one label
// (`*.example.com`); labels of 1–63 letters, digits, `-` and `_`, not starting
// or ending with `-`; at most 253 characters; case-insensitive (stored lower
// case); one trailing dot (the DNS root) is dropped.
//
// `_` is accepted: DNS itself allows it (RFC 2181 §11), real internal names
// use it, browsers and Node send it in Host, and the connector and the stores
// always took it — only the control API refused it, so a route the operator
// could add was one a user could not. Public CAs will not put `_` in a
// certificate name, but a wildcard certificate covers such a label, so the
// name is still servable over TLS.

export const MAX_HOSTNAME_LENGTH = 253;
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** Why a text is not a hostname; the wording is HostnameError's. */
export type HostnameFault = 'not-bare' | 'port' | 'wildcard' | 'invalid';

const WORDING: Record<HostnameFault, (quoted: string) => string> = {
  'not-bare': (q) => `${q} must be a bare hostname, without scheme or path`,
  port: (q) => `${q} must not include a port`,
  wildcard: (q) => `${q}: only a leading "*." wildcard is supported, as in *.example.com`,
  invalid: (q) => `${q} is not a valid hostname`,
};

export class HostnameError extends TypeError {
  override readonly name = 'HostnameError';
  constructor(
    readonly input: string,
    readonly fault: HostnameFault,
  ) {
    super(WORDING[fault](JSON.stringify(input)));
  }
}

/** The fault of an already lower-cased, trimmed name without its trailing dot, or undefined when it is valid. */
function faultOf(h: string): HostnameFault | undefined {
  if (h.includes('/')) return 'not-bare';
  if (h.includes(':')) return 'port';
  const bare = h.startsWith('*.') ? h.slice(2) : h;
  if (bare.includes('*')) return 'wildcard';
  if (h.length > MAX_HOSTNAME_LENGTH || !bare.split('.').every((l) => LABEL.test(l))) return 'invalid';
  return undefined;
}

/**
 * Lower-cases and checks an exact or `*.` wildcard hostname; throws a
 * HostnameError (a TypeError) naming the fault.
 */
export function normalizeHostname(text: string): string {
  let h = text.trim().toLowerCase();
  if (h.endsWith('.')) h = h.slice(0, -1);
  const fault = faultOf(h);
  if (fault) throw new HostnameError(text, fault);
  return h;
}

/**
 * The lower-cased name when the text is an exact hostname (no `*.`
 * wildcard), else undefined: for a name that will name a file or a served
 * host, where a wildcard means nothing.
 */
export function exactHostname(text: string): string | undefined {
  try {
    const h = normalizeHostname(text);
    return h.startsWith('*.') ? undefined : h;
  } catch {
    return undefined;
  }
}
