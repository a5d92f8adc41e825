// The fleet's relays as an operator sees them from a shell: every relay the
// history remembers (down ones until forgotten) plus live members it could
// not record, each up, draining, down or stopped. `tunnel-relay relays
// list|forget` print and change it; the dashboard's Forget goes through
// `forgetDownRelay` too, so both refuse a live relay the same way.

import type { Command, Option } from 'commander';
import { ApiError } from '../control/api-error.js';
import { openStore } from '../store/open.js';
import { isRelayHistoryId } from '../store/relay-history.js';
import type { Store } from '../store/types.js';

/** up/draining: a member now; down: stopped heartbeating without draining (killed, crashed, cut off); stopped: drained, then gone. */
export type RelayState = 'up' | 'draining' | 'down' | 'stopped';

export interface RosterEntry {
  readonly id: string;
  readonly region: string;
  readonly state: RelayState;
  readonly lastSeen: number;
  /** When it entered its state: started (up, draining), its last heartbeat (down, stopped). */
  readonly since: number;
  /** A live member the history has no record of (it was full): it vanishes when it dies. */
  readonly recorded: boolean;
}

export async function relayRoster(store: Store): Promise<RosterEntry[]> {
  const [members, history] = await Promise.all([store.listRelays(), store.listRelayHistory()]);
  const recorded = new Set(history.map((h) => h.id));
  const live = new Set(members.map((m) => m.id));
  const out: RosterEntry[] = members.map((m) => ({
    id: m.id,
    region: m.region,
    state: m.draining ? 'draining' : 'up',
    lastSeen: m.lastSeen,
    since: m.startedAt,
    recorded: recorded.has(m.id),
  }));
  for (const h of history) {
    if (live.has(h.id)) continue;
    out.push({ id: h.id, region: h.region, state: h.draining ? 'stopped' : 'down', lastSeen: h.lastSeen, since: h.lastSeen, recorded: true });
  }
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

/** Only a relay that is no longer a member: a live one would record itself again at its next heartbeat. */
export async function forgetDownRelay(store: Store, id: string): Promise<void> {
  if (!isRelayHistoryId(id)) throw new ApiError(404, 'relay_not_found', `no relay ${JSON.stringify(id.slice(0, 130))} in the fleet history`);
  if ((await store.listRelays()).some((m) => m.id === id)) throw new ApiError(409, 'relay_alive', `relay ${id} is running: stop it first (only relays that are down or stopped can be forgotten)`);
  if (!(await store.listRelayHistory()).some((h) => h.id === id)) throw new ApiError(404, 'relay_not_found', `no relay ${id} in the fleet history`);
  await store.forgetRelay(id);
}

const out = (s: string): void => {
  process.stdout.write(s + '\n');
};
const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

export function registerRelayCommands(program: Command, storeOpt: () => Option): void {
  const relays = program.command('relays').description("the fleet's relays, down ones included until forgotten (what the dashboard shows)");
  relays
    .command('list')
    .description('every relay the fleet remembers: id, region, state (up, draining, down, stopped), last seen, since when')
    .option('--output <format>', 'table or json', 'table')
    .addOption(storeOpt())
    .action(async (o: { output: string; store: string }) => {
      const store = await openStore(o.store);
      try {
        const roster = await relayRoster(store);
        if (o.output === 'json') return out(JSON.stringify(roster));
        if (roster.length === 0) return out('No relays have joined this fleet yet (tunnel-relay serve records each one)');
        const rows = [
          ['ID', 'REGION', 'STATE', 'LAST SEEN', 'SINCE'],
          ...roster.map((r) => [r.id, r.region, r.state, iso(r.lastSeen), `${iso(r.since)}${r.recorded ? '' : ' (not recorded)'}`]),
        ];
        const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
        for (const r of rows) out(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join('  '));
      } finally {
        await store.close();
      }
    });
  relays
    .command('forget <id>')
    .description('drop a relay that is down or stopped from the list (its requests stay in the fleet totals)')
    .addOption(storeOpt())
    .action(async (id: string, o: { store: string }) => {
      const store = await openStore(o.store);
      try {
        await forgetDownRelay(store, id);
        out(`forgot relay ${id} (its requests stay in the fleet totals)`);
      } finally {
        await store.close();
      }
    });
}
