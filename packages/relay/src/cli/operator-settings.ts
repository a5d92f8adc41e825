import { existsSync, writeFileSync, chmodSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { loadRelayConfig } from './relay-config.js';
import { fileStoreDir } from '../store/open.js';

/**
 * Operator commands run on a relay host (`tunnel-relay login approve CODE
 * --account NAME`, `account create`, `zone add`, …) act on the relay's own
 * store with its own fleet key, so they read both from the relay's config
 * file when no flag says otherwise: the one a service install writes
 * (/etc/tunnel-relay/relay.yml), or TUNNEL_RELAY_CONFIG, or --config.
 * Nothing is guessed: without any of them the command says what is missing,
 * where it once made ./relay-data and a fleet key nobody else had.
 */

export const DEFAULT_RELAY_CONFIG = '/etc/tunnel-relay/relay.yml';

export class OperatorSettingsError extends Error {}

/** The relay config in effect: --config, else TUNNEL_RELAY_CONFIG, else the installed one when it exists. */
export function relayConfigFile(flag: string | undefined): string | undefined {
  if (flag) return flag;
  const env = process.env.TUNNEL_RELAY_CONFIG;
  if (env) return env;
  return existsSync(DEFAULT_RELAY_CONFIG) ? DEFAULT_RELAY_CONFIG : undefined;
}

/** A service install keeps the fleet key next to relay.yml (systemd hands it to the service). */
export function keysNextTo(configFile: string | undefined): string | undefined {
  if (!configFile) return undefined;
  const sibling = join(dirname(resolve(configFile)), 'fleet-key.json');
  return existsSync(sibling) ? sibling : undefined;
}

const NO_CONFIG = `none at ${DEFAULT_RELAY_CONFIG}`;

export function missingStore(configFile: string | undefined): OperatorSettingsError {
  return new OperatorSettingsError(
    `no fleet store: pass --store URL (or TUNNEL_RELAY_STORE), or name the relay's config with --config FILE or TUNNEL_RELAY_CONFIG (${configFile ? `${configFile} has no store:` : NO_CONFIG})`,
  );
}

export function missingKeys(configFile: string | undefined): OperatorSettingsError {
  return new OperatorSettingsError(
    `no fleet key: pass --keys FILE (or TUNNEL_RELAY_KEYS), or name the relay's config with --config FILE or TUNNEL_RELAY_CONFIG (${configFile ? `${configFile} has no keys: and no fleet-key.json next to it` : NO_CONFIG})`,
  );
}

/** Commands that act on a fleet store (they have --store), except `serve` (its own settings) and `service` (it writes them). */
function operatorCommands(cmd: Command): Command[] {
  const here = cmd.options.some((o) => o.attributeName() === 'store') && cmd.name() !== 'serve' && cmd.parent?.name() !== 'service' ? [cmd] : [];
  return [...here, ...cmd.commands.flatMap((c) => operatorCommands(c))];
}

/**
 * Gives every operator command `--config` and, before it runs, fills --store
 * and --keys from the relay's config when neither a flag nor the environment
 * gave them.
 */
export function readOperatorSettingsFromRelayConfig(program: Command): void {
  for (const cmd of operatorCommands(program)) {
    cmd.option('--config <file>', `the relay's relay.yml, for --store and --keys when not given (default: TUNNEL_RELAY_CONFIG, else ${DEFAULT_RELAY_CONFIG} when it exists)`);
    cmd.hook('preAction', (_self, action) => {
      const given = (name: string) => {
        const src = action.getOptionValueSource(name);
        return (src === 'cli' || src === 'env') && action.getOptionValue(name) !== undefined;
      };
      const wantsKeys = action.options.some((o) => o.attributeName() === 'keys');
      if (given('store') && (!wantsKeys || given('keys'))) return;
      const file = relayConfigFile(action.getOptionValue('config') as string | undefined);
      const cfg = file ? loadRelayConfig(file) : {};
      if (!given('store')) {
        if (!cfg.store) throw missingStore(file);
        action.setOptionValueWithSource('store', cfg.store, 'config');
      }
      if (wantsKeys && !given('keys')) {
        const keys = cfg.keys ?? keysNextTo(file);
        if (!keys) throw missingKeys(file);
        action.setOptionValueWithSource('keys', keys, 'config');
      }
    });
    cmd.hook('preAction', (_self, action) => {
      // A store that does not exist yet is made, but never silently: a typo would otherwise be a new, empty fleet.
      const dir = fileStoreDir(String(action.getOptionValue('store')));
      if (dir && !existsSync(dir)) process.stderr.write(`note: ${dir} does not exist: starting a new, empty store there\n`);
    });
  }
}

/** `tunnel-relay keys operator`: a random operator key in a new 0600 file (never printed, never on a command line). */
export function writeOperatorKey(path: string, force: boolean): void {
  if (existsSync(path) && !force) throw new OperatorSettingsError(`${path} already exists; keeping it (--force replaces it, which logs every operator out)`);
  mkdirSync(dirname(resolve(path)), { recursive: true });
  writeFileSync(path, randomBytes(24).toString('base64url') + '\n', { mode: 0o600 });
  // An existing file keeps its mode on overwrite: make sure.
  chmodSync(path, 0o600);
}
