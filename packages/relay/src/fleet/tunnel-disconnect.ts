// An operator's disconnect-without-delete (cloudflared's `tunnel cleanup`):
// the store records when (Tunnel.disconnectedAt) and announces the tunnel;
// every relay then ends that tunnel's connections made before it
// (relay.ts), and the connectors dial again. The tunnel, its routes and its
// credential stay. Shared by the dashboard and `tunnel-relay tunnel disconnect`.

import { ApiError } from '../control/api-error.js';
import { StoreError, type Store, type Tunnel } from '../store/types.js';

export async function disconnectTunnel(store: Store, id: string): Promise<{ tunnel: Tunnel; connections: number }> {
  const connections = (await store.listPresence({ tunnelId: id })).length;
  try {
    return { tunnel: await store.disconnectTunnel(id), connections };
  } catch (e) {
    if (e instanceof StoreError && e.code === 'NOT_FOUND') throw new ApiError(404, 'tunnel_not_found', `no tunnel ${id}`);
    throw e;
  }
}

const TUNNEL_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A tunnel by its id, or by name within the account. */
export async function findTunnel(store: Store, ref: string, accountName: string): Promise<Tunnel> {
  if (TUNNEL_ID.test(ref)) {
    const t = await store.getTunnel(ref);
    if (t) return t;
  }
  const account = await store.getAccountByName(accountName);
  if (!account) throw new ApiError(404, 'account_not_found', `no account ${accountName}`);
  const t = await store.getTunnelByName(account.id, ref);
  if (!t) throw new ApiError(404, 'tunnel_not_found', `account ${accountName} has no tunnel named ${ref}`);
  return t;
}
