#!/usr/bin/env node
// Over 500 lines: the wiring of every tunnel-relay subcommand (serve, keys, accounts, zones, revoke, service); each command's work lives in the module it calls.
import { Command, Option, CommanderError } from 'commander';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { createLogger, LOG_LEVELS } from '@tunnel/host';
import { Relay, type RelayDeps } from '../relay.js';
import { openAcmeStore } from '../tls/acme-store.js';
import type { AcmeSettings } from '../tls/acme-issuer.js';
import { parseListen, type ListenAddress } from '../edge/listen.js';
import { generateKeyFile, loadKeyFile, KeyFileError } from '../control/keys.js';
import { openStore } from '../store/open.js';
import { StoreError } from '../store/types.js';
import { issueTunnelToken, ensureAccount } from '../control/provisioning.js';
import { controlRequestHandler, approveLogin, denyLogin, issueEnrollToken } from '../control/control-api.js';
import { TlsConfigError } from '../edge/listener-tls.js';
import { grantZone } from '../zones/zone-grants.js';
import { ApiError } from '../control/api-error.js';
import { HostPortError, peekClaims } from '@tunnel/protocol';
import { readFileSync } from 'node:fs';
import { durationMs, loadRelayConfig, ConfigError, type RelayConfigFile } from './relay-config.js';
import http from 'node:http';
import { RelayMetrics } from '../metrics.js';
import { Dashboard } from '../dashboard/dashboard.js';
import { RelayHistoryPublisher } from '../dashboard/relay-history-publisher.js';
import { LegacyCredentials, parseLifetime, type CredentialPolicy, type LegacyPolicy } from '../connectors/credential-check.js';
import { CredentialLifetime } from '@tunnel/protocol';
import { registerRelayServiceCommands, ServiceError } from './service-install.js';
import { serveOption, SERVE_OPTION_NAMES } from './serve-options.js';
import { defaultLimits, LIMIT_SETTINGS, type RelayLimits } from '../relay-limits.js';
import { OperatorKeyGuard } from '../control/operator-key-guard.js';
import { LoginAdmissions } from '../control/login-admission.js';
import { keysNextTo, missingKeys, missingStore, OperatorSettingsError, readOperatorSettingsFromRelayConfig, relayConfigFile, writeOperatorKey } from './operator-settings.js';
import { registerZoneCommands } from '../zones/zone-commands.js';
import { registerRelayCommands } from '../fleet/relay-roster.js';
import { disconnectTunnel, findTunnel } from '../fleet/tunnel-disconnect.js';
import { ClaimChecks } from '../zones/zone-claims.js';
import { withQuickRoutes } from '../quick/quick-routes.js';
import { sharedRedisOf } from '../rate-limiter.js';
import type { QuickSettings } from '../quick/quick-tunnels.js';
import { checkZoneName } from '../zones/zone-rules.js';

const VERSION = '0.1.0';

class UsageError extends Error {}

function positiveInt(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} must be a whole number of at least 1, not ${JSON.stringify(v)}`);
  return n;
}

function die(msg: string, code = 1): never {
  process.stderr.write(`tunnel-relay: ${msg}\n`);
  process.exit(code);
}

const program = new Command('tunnel-relay')
  .description('Relay node of the tunnel fleet: publishes connectors\' origins under public hostnames.')
  .version(VERSION)
  // One line and a hint: the whole help after a typo buries the error.
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

const storeOpt = () => serveOption('store');
const keysOpt = () => new Option('--keys <file>', 'fleet signing key file').env('TUNNEL_RELAY_KEYS');

/**
 * A duration flag: the forms relay.yml takes, else a usage error naming the
 * flag (a NaN once made SIGTERM wait for nothing). A number is relay.yml's,
 * already checked there.
 */
function durationFlag(flag: string, value: string | number): number {
  if (typeof value === 'number') return value;
  const r = durationMs(value);
  if ('problem' in r) throw new UsageError(`--${flag}: ${r.problem}`);
  return r.ms;
}

/** --acme-*: checked here, so a wrong one stops start-up naming the flag. */
async function acmeDeps(o: ReturnType<typeof merged>, store: object, relayId: string): Promise<RelayDeps['acme']> {
  if (!o.acmeDirectory) {
    if (o.acmeEmail) throw new UsageError('--acme-email needs --acme-directory');
    return undefined;
  }
  if (!/^https?:\/\//.test(o.acmeDirectory)) throw new UsageError(`--acme-directory: expected an https:// URL, got ${JSON.stringify(o.acmeDirectory)}`);
  if (!o.acmeEmail || !/^[^@\s]+@[^@\s]+$/.test(o.acmeEmail)) throw new UsageError('--acme-directory needs --acme-email ADDRESS (the CA writes about expiring certificates and account problems)');
  if (!o.https) throw new UsageError('--acme-directory needs the public --https listener (certificates are served there)');
  const challenge = (o.acmeChallenge ?? (o.http === 'off' ? 'tls-alpn-01' : 'http-01')) as AcmeSettings['challenge'];
  if (challenge === 'http-01' && o.http === 'off') throw new UsageError('--acme-challenge http-01 is answered on the public --http listener, which is off');
  if (challenge === 'dns-01' && !o.acmeDnsHook) throw new UsageError('--acme-challenge dns-01 needs --acme-dns-hook COMMAND');
  const ordersPerHour = Number(o.acmeOrdersPerHour);
  if (!Number.isInteger(ordersPerHour) || ordersPerHour < 0) throw new UsageError(`--acme-orders-per-hour must be a whole number, not ${JSON.stringify(o.acmeOrdersPerHour)}`);
  const acmeStore = await openAcmeStore(o.store, store, relayId);
  return {
    store: acmeStore,
    settings: {
      directory: o.acmeDirectory,
      email: o.acmeEmail,
      challenge,
      ...(o.acmeDnsHook ? { dnsHook: { command: o.acmeDnsHook, timeoutMs: durationFlag('acme-dns-hook-timeout', o.acmeDnsHookTimeout) } } : {}),
    },
    options: {
      ordersPerHour,
      retryBaseMs: durationFlag('acme-retry-after', o.acmeRetryAfter),
      retryMaxMs: 6 * 3_600_000,
      handshakeWaitMs: durationFlag('acme-handshake-wait', o.acmeHandshakeWait),
    },
  };
}

function readOperatorKey(file: string | undefined): string | undefined {
  if (!file) return undefined;
  let key: string;
  try {
    key = readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw new UsageError(`cannot read operator key file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (key.length < 12) throw new UsageError(`operator key in ${file} is too short (at least 12 characters)`);
  return key;
}

/** Flags given on the command line (or env) win over relay.yml, which wins over defaults. */
function merged(cmd: Command, o: Record<string, unknown>, cfg: RelayConfigFile) {
  const pick = <T,>(flag: string, fromFile: T | undefined): T => {
    const src = cmd.getOptionValueSource(flag);
    return (src === 'cli' || src === 'env' || fromFile === undefined ? o[flag] : fromFile) as T;
  };
  const l = cfg.listen ?? {};
  return {
    store: pick<string>('store', cfg.store),
    keys: pick<string>('keys', cfg.keys),
    id: pick<string | undefined>('id', cfg.id),
    region: pick<string>('region', cfg.region),
    http: pick<string>('http', l.http),
    https: pick<string | undefined>('https', l.https),
    connect: pick<string>('connect', l.connect),
    control: pick<string>('control', l.control),
    peer: pick<string>('peer', l.peer),
    metrics: pick<string | undefined>('metrics', l.metrics),
    tlsCert: pick<string | undefined>('tlsCert', cfg.tls?.cert),
    tlsKey: pick<string | undefined>('tlsKey', cfg.tls?.key),
    tlsCa: pick<string | undefined>('tlsCa', cfg.tls?.ca),
    insecureHttpControl: pick<boolean>('insecureHttpControl', cfg['insecure-http-control']),
    acmeDirectory: pick<string | undefined>('acmeDirectory', cfg.acme?.directory),
    acmeEmail: pick<string | undefined>('acmeEmail', cfg.acme?.email),
    acmeChallenge: pick<string | undefined>('acmeChallenge', cfg.acme?.challenge),
    acmeDnsHook: pick<string | undefined>('acmeDnsHook', cfg.acme?.['dns-hook']),
    acmeDnsHookTimeout: pick<string | number>('acmeDnsHookTimeout', cfg.acme?.['dns-hook-timeout']),
    acmeOrdersPerHour: pick<string | number>('acmeOrdersPerHour', cfg.acme?.['orders-per-hour']),
    acmeRetryAfter: pick<string | number>('acmeRetryAfter', cfg.acme?.['retry-after']),
    acmeHandshakeWait: pick<string | number>('acmeHandshakeWait', cfg.acme?.['handshake-wait']),
    advertiseHost: pick<string>('advertiseHost', cfg['advertise-host']),
    drainTimeout: pick<string | number>('drainTimeout', cfg['drain-timeout']),
    drainDelay: pick<string | number>('drainDelay', cfg['drain-delay']),
    loginTtl: pick<string | number>('loginTtl', cfg['login-ttl']),
    operatorKey:
      (o.operatorKey as string | undefined) ??
      readOperatorKey(o.operatorKeyFile as string | undefined) ??
      readOperatorKey(cfg['operator-key-file']),
    accountTtl: pick<string>('accountCredentialTtl', cfg['account-credential-ttl']),
    tunnelTtl: pick<string>('tunnelTokenTtl', cfg['tunnel-token-ttl']),
    legacy: pick<LegacyPolicy>('legacyCredentials', cfg['legacy-credentials']),
    logLevel: pick<string>('logLevel', cfg.log?.level),
    logFormat: pick<string>('logFormat', cfg.log?.format),
    logFile: pick<string | undefined>('logFile', cfg.log?.file),
    limits: limitsFrom(cmd, o, cfg),
    quickZone: pick<string | undefined>('quickZone', cfg['quick-zone']),
    quickTokenTtl: pick<string>('quickTokenTtl', cfg['quick-token-ttl']),
    quickBanner: pick<string | undefined>('quickBanner', cfg['quick-banner']),
  };
}

/** Each limit: its flag when given, else relay.yml's `limits:`, else the default. */
function limitsFrom(cmd: Command, o: Record<string, unknown>, cfg: RelayConfigFile): RelayLimits {
  const out = defaultLimits();
  const fromFile = (cfg.limits ?? {}) as Record<string, number | undefined>;
  for (const l of LIMIT_SETTINGS) {
    const opt = camel(l.name);
    const src = cmd.getOptionValueSource(opt);
    if (src === 'cli' || src === 'env') {
      const raw = String(o[opt]);
      if (l.kind === 'ms') {
        out[l.key] = durationFlag(l.name, raw);
        continue;
      }
      if (!/^\d+$/.test(raw)) throw new UsageError(`--${l.name}: expected a whole number (0 turns it off), got ${JSON.stringify(raw)}`);
      out[l.key] = Number(raw);
    } else if (fromFile[l.name] !== undefined) {
      out[l.key] = fromFile[l.name]!;
    }
  }
  return out;
}

/**
 * A hidden alias given on the command line stands for its flag, with the
 * flag's precedence over relay.yml (the alias has no default, so only a
 * given one counts). The flag itself wins when both are given.
 */
function aliasFlag(cmd: Command, flags: Record<string, unknown>, alias: string, flag: string): void {
  if (flags[alias] === undefined) return;
  const src = cmd.getOptionValueSource(flag);
  if (src === 'cli' || src === 'env') return;
  cmd.setOptionValueWithSource(flag, flags[alias], 'cli');
  flags[flag] = flags[alias];
}

/** `--quick-zone` and its companions; undefined when quick tunnels are off. */
function quickSettings(o: { quickZone?: string; quickTokenTtl: string; quickBanner?: string }): QuickSettings | undefined {
  if (!o.quickZone) return undefined;
  const zone = checkZoneName(o.quickZone);
  if (!zone.ok) throw new UsageError(`--quick-zone: ${zone.refusal.message}`);
  let tokenSeconds: number;
  try {
    tokenSeconds = parseLifetime(o.quickTokenTtl, '--quick-token-ttl');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  // A header value: printable ASCII only, so no banner can split the response head.
  if (o.quickBanner !== undefined && !/^[\x20-\x7e]{1,200}$/.test(o.quickBanner)) throw new UsageError('--quick-banner: 1-200 printable ASCII characters (it is sent as a header)');
  return { zone: zone.value, tokenSeconds, ...(o.quickBanner ? { banner: o.quickBanner } : {}) };
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

type Listener = 'http' | 'https' | 'connect' | 'control' | 'peer' | 'metrics';

/**
 * A listener's address ("off" or unset: none), or a usage error that names
 * the flag or the relay.yml key it came from; `connect` cannot be off.
 */
function listenAddress(cmd: Command, configFile: string | undefined, name: Listener, spec: string | undefined): ListenAddress | undefined {
  const where = () => (cmd.getOptionValueSource(name) === 'cli' || !configFile ? `--${name}` : `listen.${name} in ${configFile}`);
  if (spec === undefined || (spec === 'off' && name !== 'connect')) return undefined;
  try {
    return parseListen(spec);
  } catch (e) {
    if (e instanceof HostPortError) throw new UsageError(`${where()}: ${e.message}${spec === 'off' ? ' (the connector endpoint cannot be off)' : ''}`);
    throw e;
  }
}

const serve = program
  .command('serve')
  .description('run a relay node')
  .option('--config <file>', 'relay.yml with these same settings (command-line flags win)');
// The settings `service install` writes for serve (one table), then serve's own.
for (const name of SERVE_OPTION_NAMES) serve.addOption(serveOption(name));
serve
  .addOption(keysOpt())
  .addOption(new Option('--tls-cert <file>', 'certificate (PEM) for HTTPS, wss://, the control API and the peer endpoint (reloaded on change and SIGHUP)').env('TUNNEL_RELAY_TLS_CERT'))
  .addOption(new Option('--tls-key <file>', 'private key (PEM) of --tls-cert').env('TUNNEL_RELAY_TLS_KEY'))
  .addOption(new Option('--tls-ca <file>', 'CA bundle (PEM) that verifies other relays of the fleet (default: system CAs and NODE_EXTRA_CA_CERTS)').env('TUNNEL_RELAY_TLS_CA'))
  .option('--acme-directory <url>', 'ACME directory URL: certificates per routed hostname, ordered at its first TLS handshake (--tls-cert, or else a self-signed certificate made at start, answers other names)')
  .option('--acme-email <email>', 'contact address of the ACME account')
  .addOption(new Option('--acme-challenge <type>', 'how hostnames are proven (default: http-01 with --http, else tls-alpn-01)').choices(['http-01', 'tls-alpn-01', 'dns-01']))
  .option('--acme-dns-hook <command>', 'DNS-01: command run as `COMMAND set|clear _acme-challenge.ZONE VALUE` (set returns once the TXT record is live); with it, names under a routed *.zone share one *.zone certificate')
  .option('--acme-dns-hook-timeout <duration>', 'longest one run of --acme-dns-hook may take before it is killed and the order backs off', '2m')
  .option('--acme-orders-per-hour <n>', 'most ACME orders the fleet places per hour, counted in Redis with a Redis store (per relay with a file store); 0: no ceiling', '60')
  .option('--acme-retry-after <duration>', 'wait after a failed order before a name is ordered again (doubles per failure, up to 6h)', '1m')
  .option('--acme-handshake-wait <duration>', 'how long a first handshake waits for its certificate before getting the fallback', '30s')
  .option('--advertise-peer-url <url>', 'URL peers use for this relay\'s peer endpoint when it is not advertise-host:PORT (behind NAT or a proxy)')
  .addOption(new Option('--operator-key <key>', 'key for operator actions on the control API and dashboard (prefer --operator-key-file)').env('TUNNEL_RELAY_OPERATOR_KEY'))
  .addOption(new Option('--operator-key-file <file>', 'read the operator key from this file').env('TUNNEL_RELAY_OPERATOR_KEY_FILE'))
  .option('--login-ttl <duration>', 'how long a `tunnel login` code stays valid', '10m')
  .option('--peer-replay-cache-entries <n>', 'embedded store only: relay-to-relay nonces kept for the replay check; when full, peer requests are refused (Redis keeps them itself)', '200000')
  .option('--account-credential-ttl <duration>', 'lifetime of account credentials issued here (tunnel login)', '90d')
  .option('--tunnel-token-ttl <duration>', 'lifetime of tunnel tokens issued here', '365d')
  .addOption(new Option('--legacy-credentials <policy>', 'credentials issued before they expired (no exp): accept (logged once each) or refuse').choices(['accept', 'refuse']).default('accept'))
  .option('--quick-zone <zone>', 'offer anonymous quick tunnels (`tunnel --url`) under this zone, reserved to them (default: off)')
  .option('--quick-token-ttl <duration>', 'lifetime of a quick tunnel token; its live connector renews it', '8h')
  .option('--quick-banner <text>', 'add this text as a Tunnel-Quick-Notice header to every quick tunnel response')
  .option('--zone-claims', 'let accounts claim zones themselves by a DNS TXT challenge (`tunnel zone claim`)')
  .option('--dns-resolver <addr>', 'DNS server (HOST:PORT) that zone claims are checked against (default: the system resolvers)')
  .option('--zone-claim-checks <n>', 'most zone-claim DNS checks in flight at once on this relay (more get 429)', '8')
  .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS as unknown as string[]).default('info'))
  .addOption(new Option('--log-format <format>', 'json, or pretty for people (default: pretty on a TTY)').choices(['json', 'pretty', 'auto']).default('auto'))
  .option('--log-file <file>', 'write logs to this file instead of stdout')
  // The connector's spellings, so one habit works on both binaries.
  .addOption(new Option('--loglevel <level>').choices(LOG_LEVELS as unknown as string[]).hideHelp())
  .addOption(new Option('--logfile <file>').hideHelp());
for (const l of LIMIT_SETTINGS) serve.option(`--${l.name} <${l.kind === 'ms' ? 'duration' : 'n'}>`, `${l.help} (0: off)`);
serve.action(async (flags, cmd: Command) => {
    aliasFlag(cmd, flags, 'loglevel', 'logLevel');
    aliasFlag(cmd, flags, 'logfile', 'logFile');
    const configFile = relayConfigFile(flags.config);
    const o = merged(cmd, flags, configFile ? loadRelayConfig(configFile) : {});
    o.keys ??= keysNextTo(configFile) as string;
    if (!o.store) throw missingStore(configFile);
    if (!o.keys) throw missingKeys(configFile);
    // Checked before anything opens, so a wrong address stops start-up naming its flag or key.
    const listen = Object.fromEntries((['http', 'https', 'connect', 'control', 'peer', 'metrics'] as const).map((n) => [n, listenAddress(cmd, configFile, n, o[n])])) as Record<Listener, ListenAddress | undefined>;
    const log = createLogger({ name: 'tunnel-relay', level: o.logLevel, format: o.logFormat as 'json', file: o.logFile });
    const keys = loadKeyFile(o.keys);
    let policy: CredentialPolicy;
    try {
      policy = {
        accountSeconds: parseLifetime(o.accountTtl, '--account-credential-ttl'),
        tunnelSeconds: parseLifetime(o.tunnelTtl, '--tunnel-token-ttl'),
        legacy: o.legacy,
        legacySeen: new LegacyCredentials(log),
      };
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    log.info(
      { event: 'credential-policy', accountCredentialTtlSeconds: policy.accountSeconds, tunnelTokenTtlSeconds: policy.tunnelSeconds, legacyCredentials: policy.legacy },
      policy.legacy === 'accept'
        ? 'credentials without an expiry (issued before expiry existed) are accepted and each is logged once as legacy-credential: rotate them, then run with --legacy-credentials refuse'
        : 'credentials without an expiry are refused',
    );
    const id = o.id ?? `${hostname().split('.')[0]}-${randomBytes(3).toString('hex')}`;
    const metrics = new RelayMetrics({ relayId: id, region: o.region, version: VERSION });
    metrics.attachLegacyCredentials(() => policy.legacySeen?.count ?? 0);
    const nonceCacheEntries = Number(flags.peerReplayCacheEntries);
    if (!Number.isInteger(nonceCacheEntries) || nonceCacheEntries < 1000) throw new UsageError('--peer-replay-cache-entries must be an integer of at least 1000');
    // The relay's logger, so store warnings (corrupt records, watch fallback, Redis reconnects) are seen.
    const store = metrics.instrumentStore(await openStore(o.store, { nonceCacheEntries, relayHistoryEntries: o.limits.relayHistory, logger: log.child({ component: 'store' }) }));
    const claimChecks = flags.zoneClaims ? new ClaimChecks(positiveInt(flags.zoneClaimChecks, '--zone-claim-checks')) : undefined;
    if (claimChecks) metrics.attachZoneClaims(claimChecks);
    if (!!o.tlsCert !== !!o.tlsKey) throw new UsageError('--tls-cert and --tls-key go together');
    if (o.tlsCa && !o.tlsCert) throw new UsageError('--tls-ca verifies other relays over TLS: it needs --tls-cert/--tls-key');
    const acme = await acmeDeps(o, store, id);
    const relay = new Relay(
      {
        id,
        region: o.region,
        listen: {
          ...listen,
          connect: listen.connect!,
        },
        drainDelayMs: durationFlag('drain-delay', o.drainDelay),
        tls: o.tlsCert && o.tlsKey ? { cert: o.tlsCert, key: o.tlsKey, ...(o.tlsCa ? { ca: o.tlsCa } : {}) } : undefined,
        insecureHttpControl: o.insecureHttpControl,
        advertise: { host: o.advertiseHost, ...(flags.advertisePeerUrl ? { peerUrl: String(flags.advertisePeerUrl) } : {}) },
        drainTimeoutMs: durationFlag('drain-timeout', o.drainTimeout),
        limits: o.limits,
        quick: quickSettings(o),
      },
      { store, keys, log, hooks: metrics.hooks, metrics, policy, ...(acme ? { acme } : {}) },
    );
    await relay.start();
    const history = new RelayHistoryPublisher({
      store,
      log,
      hits: metrics,
      relayId: id,
      region: o.region,
      startedAt: relay.startedAt,
      urls: () => relay.urls(),
      draining: () => relay.draining,
      traffic: () => metrics.trafficByTunnel().values(),
    });
    if (o.metrics && o.metrics !== 'off') {
      const server = http.createServer((req, res) => {
        const path = (req.url ?? '/').split('?')[0];
        if (path === '/metrics' && (req.method === 'GET' || req.method === 'HEAD')) {
          metrics.text().then(
            (text) => {
              res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' });
              res.end(req.method === 'HEAD' ? undefined : text);
            },
            (e: Error) => {
              res.writeHead(500, { 'content-type': 'text/plain' });
              res.end(`metrics failed: ${e.message}\n`);
            },
          );
          return;
        }
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found: metrics are at /metrics\n');
      });
      const port = await relay.attachMetrics(server).catch((e: NodeJS.ErrnoException) => {
        const where = cmd.getOptionValueSource('metrics') === 'cli' ? '--metrics' : `listen.metrics in ${flags.config}`;
        throw new UsageError(`${where}: cannot listen on ${o.metrics}: ${e.code === 'EADDRINUSE' ? 'the port is in use' : (e.code ?? e.message)}`);
      });
      log.info({ event: 'metrics-listening', port }, 'metrics listening on /metrics');
    }
    if (o.control !== 'off') {
      const shared = sharedRedisOf(store);
      const operatorGuard = o.operatorKey
        ? new OperatorKeyGuard(o.operatorKey, { failures: o.limits.operatorKeyFailures, windowMs: o.limits.operatorKeyWindowMs, hits: metrics, redis: shared })
        : undefined;
      const logins = new LoginAdmissions(o.limits, metrics);
      metrics.attachLimitGauges({ pendingLogins: () => logins.pending });
      const dashboard = new Dashboard({
        store,
        keys,
        log,
        relayId: id,
        region: o.region,
        operatorKey: o.operatorKey,
        operatorGuard,
        controlUrl: () => relay.urls().controlUrl,
        connections: relay.connections,
        history,
        policy,
        ...(relay.certificate ? { peerTls: { dispatcher: relay.certificate.peerDispatcher() } } : {}),
        peerAuth: relay.peerAuth,
        quick: relay.quick,
        acme: () => relay.certificates?.summary() ?? null,
      });
      const control = withQuickRoutes({ quick: relay.quick, operatorGuard, log }, controlRequestHandler({
        extra: (req, res, url) => dashboard.handle(req, res, url),
        store,
        keys,
        log,
        relayId: id,
        operatorGuard,
        logins,
        controlUrl: () => relay.urls().controlUrl,
        accessJwks: () => relay.access.keys.jwks(),
        loginTtlMs: durationFlag('login-ttl', o.loginTtl),
        policy,
        isDraining: () => relay.draining,
        zoneClaims: claimChecks ? { resolver: flags.dnsResolver, checks: claimChecks } : undefined,
      }));
      const port = await relay.attachControl(control);
      log.info({ event: 'control-listening', port, operator: !!o.operatorKey }, 'control API listening');
      if (!o.operatorKey) {
        log.warn(
          { event: 'no-operator-key' },
          'no operator key: the dashboard and the operator API are disabled; create one with `tunnel-relay keys operator --out FILE` and pass --operator-key-file FILE (operator-key-file: in relay.yml)',
        );
      }
    }
    // After the control listener: the history records the control URL operators follow.
    await history.start();
    let signals = 0;
    const onSignal = (sig: string) => {
      signals++;
      if (signals > 1) {
        log.warn({ signal: sig }, 'second signal: exiting now');
        process.exit(1);
      }
      // Keeps recording while the relay drains (its store closes at the end).
      history
        .markStopping()
        .then(() => relay.drain())
        .then(
          () => {
            log.flush?.();
            process.exit(0);
          },
          (e) => {
            log.error({ err: (e as Error).message }, 'drain failed');
            process.exit(1);
          },
        );
    };
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    process.on('SIGINT', () => onSignal('SIGINT'));
    // SIGHUP re-reads the certificate (also reloaded when its files change); it never stops the relay.
    process.on('SIGHUP', () => {
      if (!relay.reloadCertificate('SIGHUP')) log.info({ event: 'sighup', tls: !!relay.certificate }, 'SIGHUP: nothing to reload');
    });
  });

program
  .command('version')
  .description('print the version (as --version does)')
  .action(() => {
    process.stdout.write(`${VERSION}\n`);
  });

registerRelayServiceCommands(program);
registerZoneCommands(program, storeOpt);
registerRelayCommands(program, storeOpt);

const keysCmd = program.command('keys').description('fleet signing keys');
keysCmd
  .command('generate')
  .description('create the fleet\'s Ed25519 signing key pair (share the file with every relay of the fleet)')
  .option('--out <file>', 'where to write it', './fleet-key.json')
  .option('--force', 'overwrite an existing key file (invalidates every credential issued)')
  .action((o) => {
    const k = generateKeyFile(o.out, !!o.force);
    process.stdout.write(`wrote ${o.out} (mode 0600)\npublic key: ${k.publicKey}\n`);
  });
keysCmd
  .command('operator')
  .description('create the operator key (dashboard and operator API) in a new file, mode 0600; it is never printed or put on a command line')
  .option('--out <file>', 'where to write it', './operator-key')
  .option('--force', 'replace an existing key (operators must use the new one)')
  .action((o: { out: string; force?: boolean }) => {
    writeOperatorKey(o.out, !!o.force);
    process.stdout.write(`wrote ${o.out} (mode 0600): pass --operator-key-file ${o.out} to tunnel-relay serve, or operator-key-file: in relay.yml\n`);
  });

const tunnelCmd = program.command('tunnel').description('operator actions on tunnels');
tunnelCmd
  .command('create <name>')
  .description('create a tunnel, route hostnames to it, and print its run token')
  .addOption(storeOpt())
  .addOption(keysOpt())
  .option('--hostname <host...>', 'hostname(s) to route to the tunnel (exact or *.domain)')
  .option('--account <name>', 'account that owns the tunnel', 'default')
  .option('--zone <zone...>', 'grant the account these zones first (as `zone add` does); hostnames must lie inside a zone the account holds')
  .option('--relay-url <url...>', 'connector endpoints to put in the token (default: the live relays in the store)')
  .option('--ttl <duration>', 'how long the token is valid (e.g. 365d, 24h)', `${CredentialLifetime.tunnelSeconds / 86400}d`)
  .action(async (name: string, o) => {
    const keys = loadKeyFile(o.keys);
    let ttlSeconds: number;
    try {
      ttlSeconds = parseLifetime(o.ttl, '--ttl');
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const store = await openStore(o.store);
    try {
      const account = await ensureAccount(store, o.account);
      for (const z of (o.zone as string[] | undefined) ?? []) await grantZone(store, account.id, z, 'operator');
      const { token, tunnel } = await issueTunnelToken(store, keys, { accountId: account.id, name, hostnames: o.hostname ?? [], relays: o.relayUrl, ttlSeconds });
      process.stderr.write(`created tunnel ${tunnel.name} (${tunnel.id})${o.hostname ? ` routed from ${o.hostname.join(', ')}` : ''}\n`);
      process.stdout.write(token + '\n');
    } finally {
      await store.close();
    }
  });

tunnelCmd
  .command('disconnect <name>')
  .description("drop a tunnel's connections on every relay (within a heartbeat); the tunnel and its credential stay and its connectors reconnect (cloudflared's tunnel cleanup)")
  .addOption(storeOpt())
  .option('--account <name>', 'account that owns the tunnel (NAME may also be the tunnel id)', 'default')
  .action(async (name: string, o) => {
    const store = await openStore(o.store);
    try {
      const tunnel = await findTunnel(store, name, o.account);
      const r = await disconnectTunnel(store, tunnel.id);
      process.stdout.write(`disconnected tunnel ${tunnel.name} (${tunnel.id}): ${r.connections} connection(s) dropped on every relay; its connectors reconnect\n`);
    } finally {
      await store.close();
    }
  });

const accountCmd = program.command('account').description('operator actions on accounts');
accountCmd
  .command('create <name>')
  .description('create an account (if new) and print an enrollment token for `tunnel login --enroll`')
  .addOption(storeOpt())
  .addOption(keysOpt())
  .option('--ttl <duration>', 'how long the enrollment token is valid (e.g. 24h, 7d)', '24h')
  .option('--reusable', 'the token may enroll more than once (default: single use)')
  .action(async (name: string, o) => {
    let ttlSeconds: number;
    try {
      ttlSeconds = parseLifetime(o.ttl, '--ttl');
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const keys = loadKeyFile(o.keys);
    const store = await openStore(o.store);
    try {
      const account = await ensureAccount(store, name);
      process.stderr.write(`account ${account.name} (${account.id})\n`);
      process.stdout.write(issueEnrollToken(keys, account.id, ttlSeconds, !!o.reusable) + '\n');
    } finally {
      await store.close();
    }
  });

const loginCmd = program.command('login').description('operator actions on `tunnel login` requests');
loginCmd
  .command('approve <code>')
  .description('approve a pending `tunnel login` code for an account')
  .addOption(storeOpt())
  .addOption(keysOpt())
  .option('--account <name>', 'account to log in to (created if new)', 'default')
  .action(async (code: string, o) => {
    const keys = loadKeyFile(o.keys);
    const store = await openStore(o.store);
    try {
      const live = await store.listRelays();
      const controlUrl = live.find((r) => r.controlUrl)?.controlUrl ?? '';
      const r = await approveLogin({ store, keys, controlUrl: () => controlUrl }, code, o.account);
      process.stdout.write(`approved login ${r.approved} for account ${r.account}\n`);
    } finally {
      await store.close();
    }
  });
loginCmd
  .command('deny <code>')
  .description('deny a pending `tunnel login` code: the waiting command says the operator denied it')
  .addOption(storeOpt())
  .action(async (code: string, o) => {
    const store = await openStore(o.store);
    try {
      const r = await denyLogin({ store }, code);
      process.stdout.write(`denied login ${r.denied}\n`);
    } finally {
      await store.close();
    }
  });
loginCmd
  .command('list')
  .description('list pending login codes')
  .addOption(storeOpt())
  .action(async (o) => {
    const store = await openStore(o.store);
    try {
      const pending = await store.listLoginSessions();
      if (pending.length === 0) process.stdout.write(`No pending login codes in ${o.store} (a user starts one with \`tunnel login --relay URL\`)\n`);
      for (const s of pending) process.stdout.write(`${s.code}\texpires ${new Date(s.expiresAt).toISOString()}\n`);
    } finally {
      await store.close();
    }
  });

program
  .command('revoke <credential>')
  .description('revoke a credential (tunnel token, account cert or enrollment token, or its id): connectors using it are disconnected fleet-wide')
  .addOption(storeOpt())
  .action(async (credential: string, o) => {
    const claims = peekClaims(credential);
    const jti = typeof claims?.jti === 'string' ? claims.jti : credential;
    const exp = typeof claims?.exp === 'number' ? claims.exp * 1000 : Date.now() + 10 * 365 * 24 * 3600 * 1000;
    const store = await openStore(o.store);
    try {
      await store.revoke(jti, exp);
      process.stdout.write(`revoked ${jti}\n`);
    } finally {
      await store.close();
    }
  });

readOperatorSettingsFromRelayConfig(program);

async function main(): Promise<void> {
  try {
    await program.parseAsync(process.argv);
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode);
    if (e instanceof KeyFileError || e instanceof OperatorSettingsError || e instanceof UsageError || e instanceof ConfigError || e instanceof ServiceError || e instanceof TlsConfigError) die(e.message);
    if (e instanceof StoreError) die(`store: ${e.message}`);
    if (e instanceof ApiError) die(`${e.message} (${e.code})`, 2);
    die((e as Error).message ?? String(e));
  }
}
void main();
