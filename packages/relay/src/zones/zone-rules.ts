// Hostname ownership (DESIGN §12): which names an account may hold as zones
// and route. Pure functions over the zone and route lists, so the control
// API, the operator CLI, adoption and the route table all apply one rule.

import { parse } from 'tldts';
import { normalizeHostname, type Route, type Zone } from '../store/types.js';

/** Why a zone or route is refused; the code is what the control API answers. */
export type Refusal =
  | { readonly code: 'invalid_hostname'; readonly message: string }
  | { readonly code: 'zone_not_allowed'; readonly message: string }
  | { readonly code: 'hostname_not_in_zone'; readonly message: string }
  | { readonly code: 'zone_owned_by_other_account'; readonly message: string }
  | { readonly code: 'hostname_routed_by_other_account'; readonly message: string };

export type Verdict<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly refusal: Refusal };

const ok = <T>(value: T): Verdict<T> => ({ ok: true, value });
const no = <T>(refusal: Refusal): Verdict<T> => ({ ok: false, refusal });

/** `name` is `zone` or a name under it. */
export function isWithin(name: string, zone: string): boolean {
  return name === zone || name.endsWith('.' + zone);
}

/** The part of a route hostname a zone must contain: `*.a.b` → `a.b`. */
export function routeBase(hostname: string): string {
  return hostname.startsWith('*.') ? hostname.slice(2) : hostname;
}

function isIpLiteral(name: string): boolean {
  // tldts knows dotted quads and IPv6; an all-digit last label (`10.1`, `0x7f.1`
  // aside) is never a DNS name anyone can hold either.
  return parse(name).isIp === true || /^[0-9]+$/.test(name.slice(name.lastIndexOf('.') + 1)) || name.includes(':');
}

/**
 * Why nobody may hold `name` as a zone (or route it as a base), or undefined
 * when a zone there is possible: never an IP literal, `localhost`, a bare TLD
 * or a public suffix (ICANN or private section of the list, `github.io` too).
 */
export function forbiddenName(name: string): string | undefined {
  if (isIpLiteral(name)) return `${name} is an IP literal: only DNS names are routed`;
  if (name === 'localhost') return 'localhost is never routed';
  if (!name.includes('.')) return `${name} is a top-level domain`;
  const suffix = parse(name, { allowPrivateDomains: true }).publicSuffix;
  if (suffix === name) return `${name} is a public suffix: register a domain under it`;
  return undefined;
}

/** Lower-cases and checks a zone name. */
export function checkZoneName(raw: string): Verdict<string> {
  let zone: string;
  try {
    zone = normalizeHostname(raw);
  } catch (e) {
    return no({ code: 'invalid_hostname', message: (e as Error).message });
  }
  if (zone.startsWith('*.')) return no({ code: 'invalid_hostname', message: `a zone is a plain name, not a wildcard: use ${zone.slice(2)}` });
  const why = forbiddenName(zone);
  return why ? no({ code: 'zone_not_allowed', message: why }) : ok(zone);
}

/**
 * May `accountId` hold `zone`? Not when another account holds it, a zone
 * above it or one below it, nor when another account's route lies inside it
 * (or covers part of it with a wildcard).
 */
export function zoneVerdict(raw: string, accountId: string, zones: Iterable<Zone>, routes: Iterable<Route>): Verdict<string> {
  const checked = checkZoneName(raw);
  if (!checked.ok) return checked;
  const zone = checked.value;
  for (const z of zones) {
    if (z.accountId === accountId) continue;
    if (isWithin(zone, z.zone) || isWithin(z.zone, zone)) {
      return no({
        code: 'zone_owned_by_other_account',
        message: z.zone === zone ? `zone ${zone} is held by another account` : `zone ${zone} overlaps zone ${z.zone} of another account`,
      });
    }
  }
  for (const r of routes) {
    if (r.accountId === accountId) continue;
    const base = routeBase(r.hostname);
    if (isWithin(base, zone) || (r.hostname.startsWith('*.') && isWithin(zone, base))) {
      return no({ code: 'hostname_routed_by_other_account', message: `another account routes ${r.hostname}, which zone ${zone} would cover` });
    }
  }
  return ok(zone);
}

/**
 * May `accountId` route `hostname` (exact or `*.domain`)? Only inside a zone
 * it holds, and never inside or over another account's zone.
 */
export function routeVerdict(raw: string, accountId: string, zones: Iterable<Zone>): Verdict<string> {
  let hostname: string;
  try {
    hostname = normalizeHostname(raw);
  } catch (e) {
    return no({ code: 'invalid_hostname', message: (e as Error).message });
  }
  const base = routeBase(hostname);
  const wild = hostname !== base;
  let held: string | undefined;
  for (const z of zones) {
    if (z.accountId === accountId) {
      if (isWithin(base, z.zone)) held = z.zone;
      continue;
    }
    if (isWithin(base, z.zone) || (wild && isWithin(z.zone, base))) {
      return no({ code: 'zone_owned_by_other_account', message: `${hostname} is inside or covers zone ${z.zone} of another account` });
    }
  }
  if (held === undefined) {
    const why = forbiddenName(base);
    return no({
      code: 'hostname_not_in_zone',
      message: why ? `${hostname} cannot be routed: ${why}` : `${hostname} is not inside a zone your account holds (ask the operator: tunnel-relay zone add ZONE --account NAME, or claim it: tunnel zone claim ZONE)`,
    });
  }
  return ok(hostname);
}

/** Holder of the most specific zone containing `name`, looked up by walking its labels. */
export function zoneOwner(name: string, zones: ReadonlyMap<string, Zone>): string | undefined {
  if (zones.size === 0) return undefined;
  let at = 0;
  for (;;) {
    const z = zones.get(at === 0 ? name : name.slice(at));
    if (z) return z.accountId;
    const dot = name.indexOf('.', at);
    if (dot === -1) return undefined;
    at = dot + 1;
  }
}

/**
 * The zone a legacy route implies for `zone adopt`: the registrable domain
 * when the name is under a listed public suffix (`app.example.com` →
 * `example.com`); under an unlisted one (`.test`, `.internal`) nothing says
 * who owns the parent, so the route's own name (`*.wild.alice.test` →
 * `wild.alice.test`). Undefined when no zone can contain it.
 */
export function impliedZone(hostname: string): string | undefined {
  const base = routeBase(hostname);
  if (forbiddenName(base)) return undefined;
  const p = parse(base, { allowPrivateDomains: true });
  if (!p.domain) return undefined;
  return p.isIcann || p.isPrivate ? p.domain : base;
}
