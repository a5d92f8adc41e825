// `tunnel-relay zone add|list|remove|adopt`: the operator's side of
// hostname ownership (DESIGN §12). Like the other operator commands they
// work on the store directly (--store), so they need no running relay.

import type { Command, Option } from 'commander';
import { openStore } from '../store/open.js';
import { ApiError } from '../control/api-error.js';
import type { Store } from '../store/types.js';
import { adoptZones, grantZone, routesOutsideZones } from './zone-grants.js';

async function withStore<T>(url: string, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = await openStore(url);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

async function accountId(store: Store, name: string): Promise<string> {
  const a = await store.getAccountByName(name);
  if (!a) throw new ApiError(404, 'account_not_found', `no account ${name} (create it: tunnel-relay account create ${name})`);
  return a.id;
}

const out = (s: string) => process.stdout.write(s + '\n');

export function registerZoneCommands(program: Command, storeOpt: () => Option): void {
  const zone = program.command('zone').description('zones: the DNS names each account may route (an account routes only inside zones it holds)');
  zone
    .command('add <zone...>')
    .description('grant ZONE (and every name under it) to an account; refused for public suffixes, bare TLDs, IP literals, localhost, and zones nested with another account\'s')
    .requiredOption('--account <name>', 'account that gets the zone')
    .addOption(storeOpt())
    .action(async (zones: string[], o: { account: string; store: string }) => {
      await withStore(o.store, async (store) => {
        const id = await accountId(store, o.account);
        for (const z of zones) {
          const granted = await grantZone(store, id, z, 'operator');
          out(`zone ${granted.zone} held by account ${o.account}`);
        }
      });
    });
  zone
    .command('list')
    .description('list zones and the accounts that hold them')
    .option('--account <name>', 'only this account\'s zones')
    .option('--output <format>', 'table or json', 'table')
    .addOption(storeOpt())
    .action(async (o: { account?: string; output: string; store: string }) => {
      await withStore(o.store, async (store) => {
        const names = new Map((await store.listAccounts()).map((a) => [a.id, a.name]));
        const zones = await store.listZones(o.account ? { accountId: await accountId(store, o.account) } : {});
        if (o.output === 'json') return out(JSON.stringify(zones.map((z) => ({ ...z, account: names.get(z.accountId) ?? null }))));
        if (zones.length === 0) return out('No zones yet: tunnel-relay zone add ZONE --account NAME');
        const rows = [['ZONE', 'ACCOUNT', 'SOURCE', 'GRANTED'], ...zones.map((z) => [z.zone, names.get(z.accountId) ?? z.accountId, z.source, new Date(z.createdAt).toISOString()])];
        const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
        for (const r of rows) out(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join('  '));
      });
    });
  zone
    .command('remove <zone>')
    .description('take a zone back (routes inside it keep serving until deleted, with a start-up warning)')
    .requiredOption('--account <name>', 'account that holds it (a guard against removing the wrong one)')
    .addOption(storeOpt())
    .action(async (name: string, o: { account: string; store: string }) => {
      await withStore(o.store, async (store) => {
        const id = await accountId(store, o.account);
        const held = await store.getZone(name.trim().toLowerCase().replace(/\.$/, ''));
        if (!held || held.accountId !== id) throw new ApiError(404, 'zone_not_found', `account ${o.account} holds no zone ${name}`);
        await store.deleteZone(held.zone);
        out(`removed zone ${held.zone} from account ${o.account}`);
        const left = routesOutsideZones(await store.listRoutes({ accountId: id }), await store.listZones());
        if (left.length > 0) process.stderr.write(`note: ${left.length} route(s) of ${o.account} are now outside its zones: ${left.map((r) => r.hostname).join(', ')}\n`);
      });
    });
  zone
    .command('adopt')
    .description('one-time migration: grant each account the zones its current routes imply; conflicts are reported, never guessed (exit 1 when there are any)')
    .addOption(storeOpt())
    .action(async (o: { store: string }) => {
      const conflicts = await withStore(o.store, async (store) => {
        const names = new Map((await store.listAccounts()).map((a) => [a.id, a.name]));
        const r = await adoptZones(store, names);
        for (const g of r.granted) out(`granted zone ${g.zone} to account ${names.get(g.accountId) ?? g.accountId} (routes: ${g.routes.join(', ')})`);
        for (const c of r.conflicts) out(`conflict: route ${c.route} of account ${names.get(c.accountId) ?? c.accountId}: ${c.reason}`);
        out(`${r.granted.length} zone(s) granted, ${r.covered} route(s) already inside a zone, ${r.conflicts.length} conflict(s)`);
        return r.conflicts.length;
      });
      if (conflicts > 0) process.exitCode = 1;
    });
}
