#!/usr/bin/env node
import { Command, Option, CommanderError } from 'commander';
import { createLogger, LOG_LEVELS } from '@tunnel/host';
import { Connector, CONNECTOR_VERSION } from '../connector.js';
import { loadConfig, resolveIngress, ConfigError, ORIGIN_REQUEST_DEFAULTS, type ConnectorConfig } from '../ingress/config.js';
import { compileIngress, describeRule, ruleForUrl } from '../ingress/ingress.js';
import { runDefault, runFlag, runOption, RunSettingError, sourceOptions } from '../run-settings.js';
import { resolveToken, relaysFor, tokenExpiry, CredentialError } from './credentials.js';
import { watchCredential } from './credential-watch.js';
import { peekClaims } from '@tunnel/protocol';
import { createStatusServer } from '../status/status-server.js';
import { registerProvisioningCommands, fetchCredentialsFor } from './provisioning-commands.js';
import { defaultConfigPath, UnsafeIdError } from './tunnel-home.js';
import { ControlError } from '../ha/control-client.js';
import { randomUUID } from 'node:crypto';
import { watchTerminal } from './terminal-hangup.js';
import { ConnectorMetrics } from '../metrics.js';
import { logOriginRequests } from '../request-log.js';
import { fetchHostnames, showStatusBlockWhenConnected } from '../status/status-block.js';
import { registerServiceCommands, ServiceError } from './service-install.js';
import { registerAccessCommands, AccessError } from './access-tcp.js';
import { AccessLoginError } from '../access/access-login.js';
import { relayTrust, CaFileError } from '../origin/ca-trust.js';
import { connectEndpointsFor } from '../ha/relay-lookup.js';
import { registerQuickCommand, quickArgv, QuickUsageError } from '../quick/quick-command.js';
import { warnIfOriginDown } from '../origin/origin-probe.js';
import type { TunnelCredentialsFile } from './credentials.js';

class CliError extends Error {}

const program = new Command('tunnel')
  .description('Publish a private origin through the tunnel relays, dialing out only.')
  .version(CONNECTOR_VERSION)
  // One line and a hint: the whole help after a typo buries the error.
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride()
  .addOption(new Option('--ca-file <file>', 'trust this CA (PEM) for relays, on top of the system store: for a fleet with a private CA (NODE_EXTRA_CA_CERTS works too)').env('TUNNEL_CA_FILE'))
  .hook('preAction', (cmd) => {
    const caFile = cmd.opts().caFile as string | undefined;
    if (caFile) relayTrust.use(caFile);
  });

function loadOptionalConfig(file: string | undefined): ConnectorConfig | undefined {
  return file ? loadConfig(file) : undefined;
}

const run = program.command('run');
for (const o of sourceOptions()) run.addOption(o);
run
  .description('run the connector: keep HA connections to the relays and serve requests to the origin')
  .argument('[name]', 'tunnel name (its credentials file is read from TUNNEL_HOME)')
  .option('--config <file>', 'config.yml with ingress rules (reloaded on change and on SIGHUP)')
  .option('--no-discover', 'use only the relays given; do not follow the fleet\'s live relay list')
  .addOption(runOption('discoveryInterval'))
  .addOption(new Option('--fleet-key <key>', 'fleet public key that signs relay lists (for credentials issued without one)').env('TUNNEL_FLEET_KEY'))
  .addOption(runOption('haConnections'))
  .addOption(runOption('gracePeriod'))
  .addOption(runOption('metrics'))
  .addOption(new Option('--loglevel <level>', 'log level').choices(LOG_LEVELS as unknown as string[]))
  // The relay's spellings, so one habit works on both binaries.
  .addOption(new Option('--log-level <level>').choices(LOG_LEVELS as unknown as string[]).hideHelp())
  .addOption(new Option('--log-format <format>', 'json, or pretty for people (default: pretty on a TTY)').choices(['json', 'pretty', 'auto']).default('auto'))
  .option('--logfile <file>', 'write logs to this file instead of stdout')
  .addOption(new Option('--log-file <file>').hideHelp())
  .action(async (nameArg: string | undefined, o) => {
    o.loglevel ??= o.logLevel;
    o.logfile ??= o.logFile;
    // No --config and no --url: the config cloudflared users keep in their home or /etc.
    if (!o.config && !o.url) o.config = defaultConfigPath();
    const cfg = loadOptionalConfig(o.config);
    const name = nameArg ?? cfg?.tunnel;
    const log = createLogger({ name: 'tunnel', level: o.loglevel ?? cfg?.loglevel ?? 'info', format: o.logFormat, file: o.logfile });
    const rules = resolveIngress(cfg, o.url);
    const ingress = compileIngress(rules, cfg?.originRequest ?? ORIGIN_REQUEST_DEFAULTS);
    const { token, file, watch } = resolveToken({
      token: o.token,
      tokenFile: o.tokenFile ?? cfg?.tokenFile,
      credentialsFile: o.credentialsFile ?? cfg?.credentialsFile ?? (name ? await credentialsPathFor(name) : undefined),
    });
    if (cfg?.tunnel !== undefined && file) checkTunnelKey(cfg, file, o.credentialsFile ?? cfg.credentialsFile ?? '');
    const exp = tokenExpiry(token);
    if (exp !== undefined && exp * 1000 <= Date.now()) {
      // Said here, before any dial: the relay would refuse it the same way.
      process.stderr.write(`tunnel: the tunnel credential expired at ${new Date(exp * 1000).toISOString()} (credential_expired): get a new one with \`tunnel token --rotate NAME\`\n`);
      process.exit(2);
    }
    const claims = peekClaims(token);
    const fleetKey = fleetKeyFor(o.fleetKey, claims?.fleetKey, file?.fleetKey);
    // Any of a relay's URLs: looked up at its /.well-known/tunnel-relay (ws:// ones are endpoints already).
    const asked: string[] | undefined = o.relay ?? (cfg?.relays.length ? cfg.relays : undefined);
    const learned = asked ? await connectEndpointsFor(asked, fleetKey) : { connect: [], control: [] };
    const relays = relaysFor(token, asked ? learned.connect : (file?.relays ?? []));
    if (relays.length === 0) throw new CliError('no relays: pass --relay URL, list `relays` in the config, or use a credential that names them');
    // A flag wins over config.yml, which wins over the default (config.yml's schema takes the same one).
    const haConnections = o.haConnections !== undefined ? runFlag('haConnections', o.haConnections) : (cfg?.haConnections ?? runDefault('haConnections')!);
    const gracePeriodMs = o.gracePeriod !== undefined ? runFlag('gracePeriod', o.gracePeriod) : (cfg?.gracePeriod ?? runDefault('gracePeriod')!);
    const discoveryIntervalMs = o.discoveryInterval !== undefined ? runFlag('discoveryInterval', o.discoveryInterval) : runDefault('discoveryInterval')!;

    const claimed = peekClaims(token)?.controlUrl;
    const controlUrls = o.discover === false ? [] : [...new Set([file?.controlUrl, typeof claimed === 'string' ? claimed : undefined, ...learned.control].filter((x): x is string => !!x))];
    const connectorId = randomUUID();
    const metrics = new ConnectorMetrics({ connectorId, tunnelId: typeof claims?.tunnelId === 'string' ? claims.tunnelId : '', version: CONNECTOR_VERSION });
    const connector = new Connector({
      id: connectorId,
      token,
      relays,
      haConnections,
      gracePeriodMs,
      configFile: o.config,
      config: cfg,
      url: o.url,
      ingress,
      log,
      controlUrls,
      accessControlUrl: file?.controlUrl ?? (typeof claimed === 'string' ? claimed : undefined),
      fleetKey,
      discoveryIntervalMs,
      hooks: metrics.originHooks,
    });
    metrics.attach(connector.ha);
    metrics.attachDiscovery(connector.discovery);
    logOriginRequests(connector.log);
    const metricsAddr: { host: string; port: number } | undefined = o.metrics !== undefined ? runFlag('metrics', o.metrics) : cfg?.metrics;
    let metricsUrl: string | undefined;
    if (metricsAddr) {
      const server = createStatusServer({ ha: connector.ha, connectorId: connector.id, metrics });
      const { host, port } = metricsAddr;
      const where = o.metrics !== undefined ? '--metrics' : `metrics in ${o.config}`;
      await new Promise<void>((resolve, reject) => {
        server.once('error', (e: NodeJS.ErrnoException) =>
          reject(new CliError(`${where}: cannot listen on ${host}:${port}: ${e.code === 'EADDRINUSE' ? 'the port is in use' : (e.code ?? e.message)}`)),
        );
        server.listen(port, host, () => resolve());
      });
      const a = server.address();
      const addr = typeof a === 'object' && a ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : `${host}:${port}`;
      metricsUrl = `http://${addr}`;
      log.info({ event: 'metrics', addr, port: typeof a === 'object' && a ? a.port : undefined }, 'status server listening on /ready, /healthcheck, /metrics');
      server.unref();
    }
    // On a terminal, a short status block once connected (never into piped or JSON output).
    if (process.stdout.isTTY) {
      const statusControlUrls = [file?.controlUrl, typeof claimed === 'string' ? claimed : undefined].filter((x): x is string => !!x);
      const pretty = o.logFormat === 'pretty' || (o.logFormat !== 'json' && !o.logfile);
      showStatusBlockWhenConnected({
        ha: connector.ha,
        haConnections,
        connectorId: connector.id,
        tunnelName: typeof claims?.tunnelName === 'string' ? claims.tunnelName : undefined,
        hostnames: async () => {
          const fromApi = await fetchHostnames(statusControlUrls, token);
          if (fromApi) return { hostnames: fromApi, source: fromApi.length ? 'api' : 'none' };
          const fromRules = [...new Set(rules.map((r) => r.hostname).filter((h): h is string => !!h))];
          return { hostnames: fromRules, source: 'ingress' };
        },
        metricsUrl: () => metricsUrl,
        logs: o.logfile ? `${o.logfile} (${o.logFormat === 'pretty' ? 'pretty' : 'JSON lines'})` : `this terminal (${pretty ? 'pretty' : 'JSON lines'}; --logfile FILE to keep them)`,
        write: (s) => process.stdout.write(s),
        color: !process.env.NO_COLOR,
      });
    }
    log.info({ event: 'starting', connectorId: connector.id, relays, haConnections, version: CONNECTOR_VERSION }, 'connector starting');
    connector.start();
    if (o.url) void warnIfOriginDown(o.url, log);
    if (watch) watchCredential(watch, token, (next) => connector.rotateCredential(next), connector.log);

    let signals = 0;
    const onSignal = (sig: string) => {
      if (++signals > 1) {
        log.warn({ signal: sig }, 'second signal: exiting now');
        process.exit(1);
      }
      void connector.drain().then(() => process.exit(0));
    };
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    process.on('SIGINT', () => onSignal('SIGINT'));
    // SIGHUP means "reload" for a service, but for a connector started on a
    // terminal it also arrives when that terminal closes (a hung-up terminal
    // no longer answers isatty()) or when the shell that ran it exits (we are
    // re-parented). Those shut down like SIGTERM instead of leaving an orphan
    // that writes its logs nowhere.
    const terminal = watchTerminal();
    let hungUp = false;
    process.on('SIGHUP', () => {
      void terminal.classify().then((what) => {
        if (what === 'gone') {
          // One hang-up, however many SIGHUPs: the kernel sends one when the
          // terminal closes and another when the shell that led its session
          // exits. Not a second signal to exit at once (that is for a user's
          // second Ctrl-C or SIGTERM).
          if (hungUp) return void log.info({ signal: 'SIGHUP' }, 'terminal hang-up again: already draining');
          hungUp = true;
          log.warn({ signal: 'SIGHUP' }, 'terminal closed: draining and exiting');
          onSignal('SIGHUP');
        } else connector.reload();
      });
    });

    const reason = await connector.fatal();
    await connector.stop();
    process.stderr.write(`tunnel: relay refused the tunnel credential (${reason.code}): ${reason.message}\n`);
    process.exit(reason.kind === 'revoked' ? 3 : 2);
  });

program
  .command('version')
  .description('print the version (as --version does)')
  .action(() => {
    process.stdout.write(`${CONNECTOR_VERSION}\n`);
  });

registerProvisioningCommands(program);
registerQuickCommand(program);
registerServiceCommands(program);
registerAccessCommands(program);

const ingressCmd = program.command('ingress').description('check ingress rules');
ingressCmd
  .command('validate')
  .description('validate the ingress rules of a config file')
  .option('--config <file>', 'config file (default: ./config.yml, TUNNEL_HOME/config.yml, /etc/tunnel/config.yml)')
  .action((o) => {
    o.config ??= defaultConfigPath() ?? 'config.yml';
    const cfg = loadConfig(o.config);
    const rules = resolveIngress(cfg, undefined);
    compileIngress(rules, cfg.originRequest);
    process.stdout.write(`OK: ${o.config}: ${rules.length} ingress rule${rules.length === 1 ? '' : 's'}\n`);
  });
ingressCmd
  .command('rule <url>')
  .description('print the ingress rule that matches URL')
  .option('--config <file>', 'config file (default: ./config.yml, TUNNEL_HOME/config.yml, /etc/tunnel/config.yml)')
  .action((url: string, o) => {
    o.config ??= defaultConfigPath() ?? 'config.yml';
    const cfg = loadConfig(o.config);
    const ingress = compileIngress(resolveIngress(cfg, undefined), cfg.originRequest);
    const m = ruleForUrl(ingress, url);
    process.stdout.write(`Matched ${describeRule(m.rule, m.index)}\n`);
  });

/** --fleet-key wins (an operator vouching for an old credential), then the signed token's, then the credentials file's. */
function fleetKeyFor(flag: string | undefined, claimed: unknown, fromFile: string | undefined): string | null {
  const key = flag ?? (typeof claimed === 'string' ? claimed : undefined) ?? fromFile;
  if (key === undefined) return null;
  if (!/^[A-Za-z0-9_-]{43}$/.test(key)) throw new CliError(`fleet key ${JSON.stringify(key.slice(0, 60))} is not an Ed25519 public key (43 base64url characters)`);
  return key;
}

/** `tunnel:` in config.yml names the tunnel its credentials file is for: a mismatch runs someone else's tunnel by mistake. */
function checkTunnelKey(cfg: ConnectorConfig, file: TunnelCredentialsFile, path: string): void {
  const want = cfg.tunnel!;
  if (want === file.tunnelName || want === file.tunnelId) return;
  const where = cfg.tunnelAt ?? { line: 0, column: 0 };
  throw new ConfigError(cfg.source, [
    { ...where, message: `tunnel: ${JSON.stringify(want)} is not the tunnel in credentials-file ${path} (${file.tunnelName ? `${file.tunnelName}, ` : ''}${file.tunnelId})` },
  ]);
}

/** TUNNEL_HOME/<id>.json for a tunnel name (fetched with cert.json when missing). */
async function credentialsPathFor(name: string): Promise<string> {
  const path = await fetchCredentialsFor(name);
  if (!path) throw new CliError(`no credentials for tunnel ${name} in ${process.env.TUNNEL_HOME || '~/.tunnel'}: run \`tunnel create ${name}\` (or \`tunnel login\` first)`);
  return path;
}

async function main(): Promise<void> {
  try {
    await program.parseAsync(quickArgv(process.argv));
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode);
    const msg =
      e instanceof ConfigError
        ? e.message
        : e instanceof ControlError
          ? `${e.message} (${e.code})`
          : e instanceof CredentialError || e instanceof CliError || e instanceof RunSettingError || e instanceof UnsafeIdError || e instanceof ServiceError || e instanceof AccessError || e instanceof AccessLoginError || e instanceof CaFileError || e instanceof QuickUsageError
          ? e.message
          : ((e as Error).message ?? String(e));
    process.stderr.write(`tunnel: ${msg}\n`);
    process.exit(1);
  }
}
void main();
