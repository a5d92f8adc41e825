import { randomId, signToken, TokenKind, type QuickBinding, type TunnelClaims } from '@tunnel/protocol';
import type { Account, Store, Tunnel } from '../store/types.js';
import { StoreError } from '../store/types.js';
import type { FleetKeys } from './keys.js';
import { checkRoute } from '../zones/zone-grants.js';
import { ApiError } from './api-error.js';
import { isReservedAccountName } from '../quick/quick-names.js';

export async function ensureAccount(store: Store, name: string): Promise<Account> {
  // Quick tunnels live in a reserved account that no person may hold a credential of.
  if (isReservedAccountName(name)) throw new ApiError(403, 'reserved_account', `account name ${name} is reserved for quick tunnels`);
  const existing = await store.getAccountByName(name);
  if (existing) return existing;
  try {
    return await store.createAccount(name);
  } catch (e) {
    if (e instanceof StoreError && e.code === 'CONFLICT') {
      const again = await store.getAccountByName(name);
      if (again) return again;
    }
    throw e;
  }
}

/** Relay connector endpoints for a new token: those given, else the live fleet. */
export async function relayUrls(store: Store, given?: string[]): Promise<string[]> {
  if (given && given.length > 0) return given;
  const live = await store.listRelays();
  return live.filter((r) => !r.draining && r.connectUrl).map((r) => r.connectUrl);
}

export function signTunnelToken(keys: FleetKeys, tunnel: Tunnel, relays: string[], controlUrl: string | undefined, ttlSeconds: number, quick?: QuickBinding): string {
  const now = Math.floor(Date.now() / 1000);
  const claims: TunnelClaims = {
    jti: randomId(12),
    accountId: tunnel.accountId,
    tunnelId: tunnel.id,
    tunnelName: tunnel.name,
    relays,
    ...(controlUrl ? { controlUrl } : {}),
    fleetKey: keys.publicKey,
    iat: now,
    exp: now + ttlSeconds,
    ...(quick ? { quick } : {}),
  };
  return signToken(TokenKind.Tunnel, claims, keys.secretKey);
}

/** Create a tunnel (or reuse one of that name), route hostnames to it, and sign its token. */
export async function issueTunnelToken(
  store: Store,
  keys: FleetKeys,
  o: { accountId: string; name: string; hostnames: string[]; relays?: string[]; ttlSeconds: number },
): Promise<{ token: string; tunnel: Tunnel }> {
  // Hostnames are checked before anything is written: a refused one creates no tunnel.
  for (const h of o.hostnames) await checkRoute(store, o.accountId, h);
  const tunnel = (await store.getTunnelByName(o.accountId, o.name)) ?? (await store.createTunnel(o.accountId, o.name));
  for (const h of o.hostnames) await store.addRoute({ hostname: h.toLowerCase(), tunnelId: tunnel.id, accountId: o.accountId });
  const relays = await relayUrls(store, o.relays);
  const live = await store.listRelays();
  return { token: signTunnelToken(keys, tunnel, relays, live.find((r) => r.controlUrl)?.controlUrl, o.ttlSeconds), tunnel };
}
