// Granting zones: by the operator (`tunnel-relay zone add`), by a DNS claim,
// and once for existing stores by `zone adopt`. The nesting rules live in
// zone-rules.ts; the store only makes an exact name unique.

import { ApiError } from '../control/api-error.js';
import { StoreError, type Store, type Zone, type ZoneSource, type Route } from '../store/types.js';
import { impliedZone, isWithin, routeBase, routeVerdict, zoneVerdict, type Refusal } from './zone-rules.js';

export function refusalError(r: Refusal): ApiError {
  return new ApiError(r.code === 'invalid_hostname' ? 400 : 403, r.code, r.message);
}

export async function grantZone(store: Store, accountId: string, rawZone: string, source: ZoneSource): Promise<Zone> {
  const [zones, routes] = await Promise.all([store.listZones(), store.listRoutes()]);
  const v = zoneVerdict(rawZone, accountId, zones, routes);
  if (!v.ok) throw refusalError(v.refusal);
  try {
    return await store.addZone({ zone: v.value, accountId, source });
  } catch (e) {
    if (e instanceof StoreError && e.code === 'CONFLICT') throw new ApiError(403, 'zone_owned_by_other_account', e.message);
    throw e;
  }
}

/** Throws the 403 the control API answers when `accountId` may not route `hostname`. */
export async function checkRoute(store: Store, accountId: string, hostname: string): Promise<string> {
  const v = routeVerdict(hostname, accountId, await store.listZones());
  if (!v.ok) throw refusalError(v.refusal);
  return v.value;
}

export interface AdoptReport {
  granted: Array<{ zone: string; accountId: string; routes: string[] }>;
  conflicts: Array<{ route: string; accountId: string; reason: string }>;
  /** Routes already inside a zone their account holds. */
  covered: number;
}

/**
 * Grants each account the zones its current routes imply. Never guesses: a
 * zone two accounts' routes imply, one that would nest with another
 * account's zone or route, or a route no zone can hold (`*.test`, an IP) is
 * reported and left alone; those routes keep serving as before.
 */
export async function adoptZones(store: Store, names: ReadonlyMap<string, string> = new Map()): Promise<AdoptReport> {
  const routes = await store.listRoutes();
  const zones = await store.listZones();
  const report: AdoptReport = { granted: [], conflicts: [], covered: 0 };
  const name = (id: string) => names.get(id) ?? id;
  // zone → the accounts (and their routes) that imply it.
  const wanted = new Map<string, Map<string, string[]>>();
  for (const r of routes) {
    if (zones.some((z) => z.accountId === r.accountId && isWithin(routeBase(r.hostname), z.zone))) {
      report.covered++;
      continue;
    }
    const zone = impliedZone(r.hostname);
    if (!zone) {
      report.conflicts.push({ route: r.hostname, accountId: r.accountId, reason: `no zone can hold ${r.hostname} (public suffix, bare TLD or IP literal): re-route it under a domain of ${name(r.accountId)}` });
      continue;
    }
    let by = wanted.get(zone);
    if (!by) wanted.set(zone, (by = new Map()));
    by.set(r.accountId, [...(by.get(r.accountId) ?? []), r.hostname]);
  }
  for (const [zone, by] of [...wanted].sort(([a], [b]) => a.length - b.length || (a < b ? -1 : 1))) {
    if (by.size > 1) {
      const who = [...by.keys()].map(name).join(', ');
      for (const [accountId, hs] of by) for (const h of hs) report.conflicts.push({ route: h, accountId, reason: `zone ${zone} is implied by routes of several accounts (${who}): grant it by hand with zone add` });
      continue;
    }
    const [[accountId, hostnames]] = [...by] as [[string, string[]]];
    // Another account's candidate nested with this one is as much a conflict as a granted zone.
    const rivals = [...wanted].filter(([z, b]) => z !== zone && (isWithin(z, zone) || isWithin(zone, z)) && [...b.keys()].some((a) => a !== accountId));
    const current = await store.listZones();
    if (current.some((z) => z.accountId === accountId && isWithin(zone, z.zone))) {
      report.covered += hostnames.length;
      continue;
    }
    const v = zoneVerdict(zone, accountId, current, routes);
    if (!v.ok || rivals.length > 0) {
      const reason = !v.ok ? v.refusal.message : `zone ${zone} nests with zone ${rivals[0]![0]} implied by another account's routes`;
      for (const h of hostnames) report.conflicts.push({ route: h, accountId, reason: `${reason}: grant by hand with zone add` });
      continue;
    }
    await store.addZone({ zone, accountId, source: 'adopt' });
    report.granted.push({ zone, accountId, routes: hostnames });
  }
  return report;
}

/** Routes whose account holds no zone containing them (served, but warned about at start-up). */
export function routesOutsideZones(routes: readonly Route[], zones: readonly Zone[]): Route[] {
  return routes.filter((r) => !zones.some((z) => z.accountId === r.accountId && isWithin(routeBase(r.hostname), z.zone)));
}
