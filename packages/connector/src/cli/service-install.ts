import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import { activate, defaultExec, hardening, quoteArg, renderUnit, say, unitHeader, writeUnitFile, checkRunnableInstall, HiddenInstallError } from '@tunnel/host';
import { stringify } from 'yaml';
import { formatHostPort } from '@tunnel/protocol';
import { loadConfig, parseConfig, resolveIngress } from '../ingress/config.js';
import { compileIngress } from '../ingress/ingress.js';
import { resolveToken } from './credentials.js';
import { fetchCredentialsFor } from './provisioning-commands.js';
import { RUN_SETTINGS, runFlag, runOption, SERVICE_METRICS, sourceOptions } from '../run-settings.js';

/**
 * `tunnel service install|uninstall`: a hardened systemd unit that runs
 * `tunnel run --config /etc/tunnel/config.yml`, the config, and the run
 * token in a root-only file that systemd hands to the service through
 * LoadCredential= (read via TUNNEL_TOKEN_FILE): the credential is never on a
 * command line, in the unit, or readable by the service user directly.
 */

export const UNIT_NAME = 'tunnel.service';

export class ServiceError extends Error {}

export interface ConnectorServiceOptions {
  unitDir: string;
  configDir: string;
  exec: string[];
  gracePeriodMs: number;
  metrics?: string;
}

export function renderConnectorUnit(o: ConnectorServiceOptions): string {
  const cfg = join(o.configDir, 'config.yml');
  const stopSec = Math.ceil(o.gracePeriodMs / 1000) + 15;
  const lines: Array<[string, string] | string> = [
    '[Unit]',
    ['Description', 'tunnel connector: publishes a private origin through the tunnel relays (outbound only)'],
    ['After', 'network-online.target'],
    ['Wants', 'network-online.target'],
    '',
    '[Service]',
    ['Type', 'simple'],
    ['ExecStart', [...o.exec, 'run', '--config', cfg, '--log-format', 'json', ...(o.metrics ? ['--metrics', o.metrics] : [])].map(quoteArg).join(' ')],
    '# The run token: a root-only file, handed over as a systemd credential.',
    ['LoadCredential', `tunnel-token:${join(o.configDir, 'token')}`],
    ['Environment', 'TUNNEL_TOKEN_FILE=%d/tunnel-token'],
    ['Environment', 'TUNNEL_HOME=%S/tunnel'],
    ['DynamicUser', 'yes'],
    ['StateDirectory', 'tunnel'],
    ['StateDirectoryMode', '0700'],
    '# SIGTERM drains: no new requests, in-flight ones finish within the grace period.',
    ['KillSignal', 'SIGTERM'],
    ['TimeoutStopSec', `${stopSec}s`],
    ['Restart', 'on-failure'],
    ['RestartSec', '5s'],
    '# Exit 2/3: the relays refused or revoked the credential; restarting will not help.',
    ['RestartPreventExitStatus', '2 3'],
    ['LimitNOFILE', '65536'],
    ['CapabilityBoundingSet', ''],
    ['AmbientCapabilities', ''],
    ...hardening(),
    '',
    '[Install]',
    ['WantedBy', 'multi-user.target'],
  ];
  return unitHeader('tunnel service install', 'tunnel service uninstall') + renderUnit(lines);
}

/**
 * config.yml for `--url`: the one origin, plus the settings given, else
 * `run`'s own defaults (from the one table both take them from), written out
 * so the operator sees what the service runs with.
 */
export function renderConnectorConfig(o: { url: string; relays?: string[]; haConnections?: number; metrics?: string; gracePeriod?: string }): string {
  const doc: Record<string, unknown> = {
    ...(o.relays?.length ? { relays: o.relays } : {}),
    [RUN_SETTINGS.haConnections.key]: o.haConnections ?? RUN_SETTINGS.haConnections.default,
    [RUN_SETTINGS.metrics.key]: o.metrics ?? SERVICE_METRICS,
    [RUN_SETTINGS.gracePeriod.key]: o.gracePeriod ?? RUN_SETTINGS.gracePeriod.default,
    ingress: [{ service: o.url }],
  };
  return '# tunnel run settings (written by `tunnel service install`).\n# The run token is not here: systemd passes it as a credential (TUNNEL_TOKEN_FILE).\n' + stringify(doc);
}

export function registerServiceCommands(program: Command): void {
  const service = program.command('service').description('run the connector as a systemd service');
  const install = service.command('install');
  for (const o of sourceOptions()) install.addOption(o);
  install
    .description(`write ${UNIT_NAME} (hardened), /etc/tunnel/config.yml and the token file, and start it`)
    .argument('[name]', 'tunnel name (its credentials are read from TUNNEL_HOME)')
    .option('--config <file>', 'install this config.yml (ingress rules) instead of --url')
    .addOption(runOption('haConnections', { help: `${RUN_SETTINGS.haConnections.help} (with --url)` }))
    .addOption(runOption('metrics', { defaultValue: SERVICE_METRICS }))
    .addOption(runOption('gracePeriod', { help: `${RUN_SETTINGS.gracePeriod.help} (with --url)` }))
    .addOption(new Option('--unit-dir <dir>', 'where the unit goes').env('TUNNEL_SERVICE_UNIT_DIR').default('/etc/systemd/system'))
    .addOption(new Option('--config-dir <dir>', 'where config.yml and the token go').env('TUNNEL_SERVICE_CONFIG_DIR').default('/etc/tunnel'))
    .option('--exec <command>', 'command that runs `tunnel` (default: this node and this CLI)')
    .option('--allow-hidden-exec', 'write the unit even when the command lies under /home, /root, /run/user or /tmp (only where a drop-in relaxes ProtectHome/PrivateTmp)')
    .option('--force', 'replace an existing config.yml and token')
    .option('--dry-run', 'print the unit and config instead of writing anything')
    .option('--no-start', 'do not run systemctl daemon-reload / enable --now')
    .action(async (name: string | undefined, o) => {
      const unitDir = resolve(o.unitDir);
      const configDir = resolve(o.configDir);
      if (!o.url && !o.config) throw new ServiceError('say what to publish: --url URL (one origin) or --config FILE (ingress rules)');
      if (o.url && o.config) throw new ServiceError('--url and --config are exclusive');
      let config: string;
      let gracePeriodMs = 30_000;
      let metrics: string | undefined;
      if (o.config) {
        const cfg = loadConfig(o.config); // refuse to install a config that would not start
        compileIngress(resolveIngress(cfg, undefined), cfg.originRequest);
        gracePeriodMs = cfg.gracePeriod;
        // The file's own metrics address wins unless --metrics is given.
        metrics = o.metrics ?? (cfg.metrics ? undefined : SERVICE_METRICS);
        config = readFileSync(o.config, 'utf8');
        for (const p of [cfg.credentialsFile, cfg.tokenFile]) {
          if (p) process.stderr.write(`warning: ${o.config} names ${p}; the service reads the token from TUNNEL_TOKEN_FILE instead\n`);
        }
      } else {
        // Checked here, so a wrong one is refused naming the flag (not a line of the generated file).
        const given = <T,>(v: string | undefined, parse: (raw: string) => T) => (v === undefined ? undefined : parse(v));
        config = renderConnectorConfig({
          url: o.url,
          relays: o.relay,
          haConnections: given(o.haConnections, (v) => runFlag('haConnections', v)),
          // config.yml spells it HOST:PORT; the flag also takes :PORT and PORT.
          metrics: given(o.metrics, (v) => formatHostPort(runFlag('metrics', v))),
          gracePeriod: given(o.gracePeriod, (v) => (runFlag('gracePeriod', v), v)),
        });
        const cfg = parseConfig(config, '(generated config.yml)');
        compileIngress(resolveIngress(cfg, undefined), cfg.originRequest);
        gracePeriodMs = cfg.gracePeriod;
      }
      const opts: ConnectorServiceOptions = {
        unitDir,
        configDir,
        exec: o.exec ? o.exec.trim().split(/\s+/) : defaultExec(),
        gracePeriodMs,
        metrics,
      };
      const unit = renderConnectorUnit(opts);
      const unitPath = join(unitDir, UNIT_NAME);
      const cfgPath = join(configDir, 'config.yml');
      const tokenPath = join(configDir, 'token');
      if (o.dryRun) {
        process.stdout.write(`# ${unitPath}\n${unit}\n# ${cfgPath}\n${config}`);
        return;
      }
      const { token } = resolveToken({
        token: o.token,
        tokenFile: o.tokenFile,
        credentialsFile: o.credentialsFile ?? (name ? await fetchCredentialsFor(name) : undefined),
      });
      try {
        if (!o.allowHiddenExec) checkRunnableInstall(opts.exec, 'tunnel', process.argv.slice(process.argv.indexOf('install') + 1), !!o.exec);
      } catch (e) {
        throw e instanceof HiddenInstallError ? new ServiceError(e.message) : e;
      }
      mkdirSync(configDir, { recursive: true, mode: 0o755 });
      for (const p of [cfgPath, tokenPath]) {
        if (existsSync(p) && !o.force) throw new ServiceError(`${p} exists: pass --force to replace it (or \`tunnel service uninstall --purge\` first)`);
      }
      writeUnitFile(cfgPath, config, 0o644);
      writeUnitFile(tokenPath, token + '\n', 0o600, ' (mode 0600, root only)');
      mkdirSync(unitDir, { recursive: true });
      writeUnitFile(unitPath, unit, 0o644);
      activate(unitDir, o.start !== false, [['daemon-reload'], ['enable', '--now', UNIT_NAME]]);
    });
  service
    .command('uninstall')
    .description(`stop and remove ${UNIT_NAME} (config.yml and the token stay unless --purge)`)
    .addOption(new Option('--unit-dir <dir>', 'where the unit is').env('TUNNEL_SERVICE_UNIT_DIR').default('/etc/systemd/system'))
    .addOption(new Option('--config-dir <dir>', 'where config.yml and the token are').env('TUNNEL_SERVICE_CONFIG_DIR').default('/etc/tunnel'))
    .option('--purge', 'also remove config.yml and the token')
    .option('--dry-run', 'print what would be removed')
    .action((o) => {
      const unitDir = resolve(o.unitDir);
      const configDir = resolve(o.configDir);
      const unitPath = join(unitDir, UNIT_NAME);
      const files = [unitPath, ...(o.purge ? [join(configDir, 'config.yml'), join(configDir, 'token')] : [])];
      if (o.dryRun) {
        const present = files.filter((f) => existsSync(f));
        process.stdout.write((present.length ? present.map((f) => `would remove ${f}`).join('\n') : 'nothing installed') + '\n');
        return;
      }
      if (!existsSync(unitPath)) say(`no ${unitPath}: not installed`);
      activate(unitDir, true, [['disable', '--now', UNIT_NAME]], true);
      for (const f of files) {
        if (!existsSync(f)) continue;
        rmSync(f, { force: true });
        say(`removed  ${f}`);
      }
      activate(unitDir, true, [['daemon-reload']], true);
      if (!o.purge) say(`kept     ${configDir} (--purge removes config.yml and the token)`);
    });
}











