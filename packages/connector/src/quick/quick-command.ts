// `tunnel --url http://localhost:8000` (also `tunnel quick --url …`,
// `tunnel --hello-world`): a quick tunnel, as cloudflared's TryCloudflare.
// No login, no files: the relay grants a random hostname and a short-lived
// token bound to it and to this connector; the usual HA connections serve
// it; the token is renewed while it runs; Ctrl-C removes the hostname.

import { randomUUID } from 'node:crypto';
import { Command, Option } from 'commander';
import { createLogger, LOG_LEVELS } from '@tunnel/host';
import { Connector } from '../connector.js';
import { ORIGIN_REQUEST_DEFAULTS, singleServiceIngress } from '../ingress/config.js';
import { compileIngress } from '../ingress/ingress.js';
import { logOriginRequests } from '../request-log.js';
import { ControlError } from '../ha/control-client.js';
import { createQuick, removeQuick, renewQuick, type QuickGrant } from './quick-client.js';
import { quickBox } from './quick-box.js';
import { quickConfigPath, resolveQuickRelay } from './quick-relay.js';
import { describeRelay } from '../ha/relay-lookup.js';
import { runDefault, runFlag, runOption } from '../run-settings.js';

export class QuickUsageError extends Error {}

/** Flags that make a bare `tunnel …` the quick path. */
const QUICK_FLAGS = new Set(['--url', '--hello-world']);
/** Program-wide options that may come before them (each takes a value). */
const GLOBAL_WITH_VALUE = new Set(['--ca-file']);

/**
 * `tunnel --url U` is `tunnel quick --url U`. Commander cannot give the
 * program a `--url` without taking it from `tunnel run --url`, so the bare
 * form is routed here: when the first word after the global options is a
 * flag and the line holds --url or --hello-world, `quick` is put before it.
 */
export function quickArgv(argv: readonly string[]): string[] {
  let i = 2;
  while (i < argv.length) {
    const a = argv[i]!;
    if (GLOBAL_WITH_VALUE.has(a)) i += 2;
    else if ([...GLOBAL_WITH_VALUE].some((g) => a.startsWith(`${g}=`))) i += 1;
    else break;
  }
  const first = argv[i];
  const rest = argv.slice(i);
  if (first === undefined || !first.startsWith('--') || first === '--help' || first === '--version') return [...argv];
  if (!rest.some((a) => QUICK_FLAGS.has(a.split('=')[0]!))) return [...argv];
  return [...argv.slice(0, i), 'quick', ...rest];
}

/** Shorter than `run`'s: a quick tunnel is ended by hand at a terminal, where 30 s of waiting reads as a hang. */
const QUICK_GRACE_PERIOD = '10s';

export function registerQuickCommand(program: Command): void {
  program
    .command('quick')
    .description('publish a local app at a random hostname with no account (also: `tunnel --url URL`); Ctrl-C removes it')
    .option('--url <url>', 'your app, e.g. http://localhost:8000')
    .option('--hello-world', 'serve the built-in hello-world page instead of an app')
    .option('--relay <url>', 'relay to ask for the quick tunnel (its https:// URL)')
    .addOption(new Option('--quick-relay <url>', `default relay for quick tunnels (also quick-relay: in ${quickConfigPath()})`).env('TUNNEL_QUICK_RELAY'))
    .addOption(runOption('haConnections'))
    .addOption(runOption('gracePeriod', { help: 'how long Ctrl-C waits for requests in flight', defaultValue: QUICK_GRACE_PERIOD }))
    .addOption(new Option('--loglevel <level>', 'log level').choices(LOG_LEVELS as unknown as string[]))
    .addOption(new Option('--log-level <level>').choices(LOG_LEVELS as unknown as string[]).hideHelp())
    .addOption(new Option('--log-format <format>', 'json, or pretty for people (default: pretty on a TTY)').choices(['json', 'pretty', 'auto']).default('auto'))
    .option('--logfile <file>', 'write logs to this file instead of stdout')
    .action(async (o) => runQuick(o));
}

interface QuickFlags {
  url?: string;
  helloWorld?: boolean;
  relay?: string;
  quickRelay?: string;
  haConnections?: string;
  gracePeriod?: string;
  loglevel?: string;
  logLevel?: string;
  logFormat: 'json' | 'pretty' | 'auto';
  logfile?: string;
}

async function runQuick(o: QuickFlags): Promise<void> {
  if (!!o.url === !!o.helloWorld) throw new QuickUsageError('give --url URL (your app, e.g. http://localhost:8000) or --hello-world');
  const service = o.helloWorld ? 'hello_world' : o.url!;
  // The origin is checked before anything is asked of a relay.
  const ingress = compileIngress(singleServiceIngress(service), ORIGIN_REQUEST_DEFAULTS);
  const haConnections = o.haConnections !== undefined ? runFlag('haConnections', o.haConnections) : runDefault('haConnections')!;
  const gracePeriodMs = runFlag('gracePeriod', o.gracePeriod ?? QUICK_GRACE_PERIOD);
  const given = resolveQuickRelay(o);
  if (!given) {
    throw new QuickUsageError(`no relay to ask for a quick tunnel: pass --relay https://RELAY, or set TUNNEL_QUICK_RELAY, or put quick-relay: https://RELAY in ${quickConfigPath()}`);
  }
  // Any of the relay's URLs: its signed /.well-known/tunnel-relay names the control API. A relay
  // from before that document is asked at the URL given.
  const relay = (await describeRelay(given).catch(() => null))?.control ?? given;
  const log = createLogger({ name: 'tunnel', level: o.loglevel ?? o.logLevel ?? 'info', format: o.logFormat, file: o.logfile });
  const connectorId = randomUUID();
  let grant: QuickGrant = await createQuick(relay, connectorId);
  if (grant.relays.length === 0) throw new ControlError(0, 'no_relays', `${relay} granted a quick tunnel but lists no relay to connect to`);
  const connector = new Connector({
    id: connectorId,
    token: grant.token,
    relays: grant.relays,
    haConnections,
    gracePeriodMs,
    url: service,
    ingress,
    log,
    controlUrls: [grant.controlUrl || relay],
    fleetKey: grant.fleetKey,
  });
  logOriginRequests(connector.log);
  log.info({ event: 'quick-tunnel', url: grant.url, hostname: grant.hostname, tunnelId: grant.tunnelId, expiresAt: new Date(grant.expiresAt).toISOString() }, `quick tunnel ${grant.url}`);
  // The box once the URL answers, i.e. once a connection is registered.
  const onConnection = (e: { event: string }) => {
    if (e.event !== 'registered') return;
    connector.ha.off('connection', onConnection);
    // stderr, as cloudflared does: stdout stays one JSON log line per line when logs are JSON.
    process.stderr.write(quickBox(grant.url));
  };
  connector.ha.on('connection', onConnection);
  connector.start();

  // Renewal: at half the token's life, by this connector only (the relay checks it is connected).
  let renewTimer: NodeJS.Timeout | null = null;
  const scheduleRenew = (atMs: number) => {
    renewTimer = setTimeout(() => void renew(), Math.max(1_000, atMs - Date.now()));
    renewTimer.unref();
  };
  const renew = async () => {
    try {
      grant = await renewQuick(relay, grant.token);
      connector.rotateCredential(grant.token);
      log.info({ event: 'quick-renewed', expiresAt: new Date(grant.expiresAt).toISOString() }, 'quick tunnel token renewed');
      scheduleRenew(Date.now() + (grant.expiresAt - Date.now()) / 2);
    } catch (e) {
      const left = grant.expiresAt - Date.now();
      log.warn({ event: 'quick-renew-failed', err: (e as Error).message, code: (e as ControlError).code }, 'cannot renew the quick tunnel token now; retrying');
      if (left > 0) scheduleRenew(Date.now() + Math.min(60_000, left / 4));
    }
  };
  scheduleRenew(Date.now() + (grant.expiresAt - Date.now()) / 2);

  let signals = 0;
  const onSignal = (sig: string) => {
    if (++signals > 1) {
      log.warn({ signal: sig }, 'second signal: exiting now');
      process.exit(1);
    }
    if (renewTimer) clearTimeout(renewTimer);
    void (async () => {
      await connector.drain();
      try {
        await removeQuick(relay, grant.token);
        log.info({ event: 'quick-removed', hostname: grant.hostname }, `quick tunnel ${grant.hostname} removed`);
      } catch (e) {
        // The relay frees it anyway once no connection is left for the idle expiry.
        log.warn({ event: 'quick-remove-failed', err: (e as Error).message }, 'could not remove the quick tunnel; the relay frees it after its idle expiry');
      }
      process.exit(0);
    })();
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  // A quick tunnel lives as long as its terminal. Closing that terminal can
  // deliver SIGHUP twice (the hang-up, then the exit of the shell that led its
  // session): one hang-up, not a second signal to exit at once.
  let hungUp = false;
  process.on('SIGHUP', () => {
    if (hungUp) return void log.info({ signal: 'SIGHUP' }, 'hang-up again: already stopping');
    hungUp = true;
    onSignal('SIGHUP');
  });

  const reason = await connector.fatal();
  await connector.stop();
  process.stderr.write(`tunnel: the relay ended the quick tunnel ${grant.hostname} (${reason.code}): ${reason.message}\n`);
  process.exit(reason.kind === 'revoked' ? 3 : 2);
}
