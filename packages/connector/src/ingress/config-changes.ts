import type { ConnectorConfig } from './config-types.js';

/** What a running connector takes from a reloaded config; any other changed key needs a restart. */
const APPLIED_LIVE = new Set<keyof ConnectorConfig>(['source', 'ingress', 'originRequest']);

/** How the file spells the keys whose name differs from the parsed config's. */
const FILE_KEY: Partial<Record<keyof ConnectorConfig, string>> = {
  credentialsFile: 'credentials-file',
  tokenFile: 'token-file',
  haConnections: 'ha-connections',
  gracePeriod: 'grace-period',
};

/**
 * The top-level keys whose value differs between the running config and a
 * reloaded one and that a reload does not apply (relays, haConnections,
 * metrics, …), as the file spells them, so the operator is told instead of the change being dropped.
 */
export function keysNeedingRestart(running: ConnectorConfig, next: ConnectorConfig): string[] {
  const keys = new Set([...Object.keys(running), ...Object.keys(next)] as Array<keyof ConnectorConfig>);
  return [...keys]
    .filter((k) => !APPLIED_LIVE.has(k) && JSON.stringify(running[k]) !== JSON.stringify(next[k]))
    .map((k) => FILE_KEY[k] ?? k)
    .sort();
}
