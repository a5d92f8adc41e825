import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import { activate, defaultExec, hardening, quoteArg, renderUnit, say, unitHeader, writeUnitFile, checkRunnableInstall, HiddenInstallError } from '@tunnel/host';
import { stringify } from 'yaml';
import { HostPortError } from '@tunnel/protocol';
import { generateKeyFile, loadKeyFile } from '../control/keys.js';
import { checkPlainListeners, TlsConfigError } from '../edge/listener-tls.js';
import { parseListen } from '../edge/listen.js';
import { durationMs } from './relay-config.js';
import { SERVE_OPTION_NAMES, SERVICE_STATE_DIR, serviceOption } from './serve-options.js';

/**
 * `tunnel-relay service install|uninstall`: a hardened systemd unit plus
 * /etc/tunnel-relay/relay.yml. Secrets (the fleet key, the operator key, a
 * TLS key) stay root-only files that systemd hands to the service through
 * LoadCredential=, so the service user (DynamicUser) never reads /etc
 * directly and nothing secret is on a command line.
 */

export const UNIT_NAME = 'tunnel-relay.service';
const STATE_DIR = SERVICE_STATE_DIR;

export class ServiceError extends Error {}

/** The same duration grammar as `serve` and relay.yml (a bare number once became `NaNms` in relay.yml). */
function durationOption(flag: string, value: string): number {
  const r = durationMs(value);
  if ('problem' in r) throw new ServiceError(`--${flag}: ${r.problem}`);
  return r.ms;
}

export interface RelayServiceOptions {
  unitDir: string;
  configDir: string;
  /** argv that starts the relay CLI (node + cli.js, or an installed `tunnel-relay`). */
  exec: string[];
  store: string;
  region?: string;
  id?: string;
  listen: { http?: string; https?: string; connect?: string; control?: string; peer?: string; metrics?: string };
  advertiseHost?: string;
  drainTimeoutMs: number;
  drainDelayMs: number;
  tls: boolean;
  /** Without TLS: plain control-plane listeners on non-loopback addresses, said out loud in relay.yml. */
  insecureHttpControl?: boolean;
}

export function renderRelayUnit(o: RelayServiceOptions): string {
  const cfg = join(o.configDir, 'relay.yml');
  const stopSec = Math.ceil((o.drainTimeoutMs + o.drainDelayMs) / 1000) + 15;
  const lines: Array<[string, string] | string> = [
    '[Unit]',
    ['Description', 'tunnel relay: public edge of the tunnel fleet'],
    ['After', 'network-online.target'],
    ['Wants', 'network-online.target'],
    '',
    '[Service]',
    ['Type', 'simple'],
    ['ExecStart', [...o.exec, 'serve', '--config', cfg, '--log-format', 'json'].map(quoteArg).join(' ')],
    ['Environment', 'TUNNEL_RELAY_KEYS=%d/fleet-key'],
    ['Environment', 'TUNNEL_RELAY_OPERATOR_KEY_FILE=%d/operator-key'],
    ['LoadCredential', `fleet-key:${join(o.configDir, 'fleet-key.json')}`],
    ['LoadCredential', `operator-key:${join(o.configDir, 'operator-key')}`],
    ...(o.tls
      ? ([
          ['Environment', 'TUNNEL_RELAY_TLS_CERT=%d/tls-cert'],
          ['Environment', 'TUNNEL_RELAY_TLS_KEY=%d/tls-key'],
          ['LoadCredential', `tls-cert:${join(o.configDir, 'tls-cert.pem')}`],
          ['LoadCredential', `tls-key:${join(o.configDir, 'tls-key.pem')}`],
        ] as Array<[string, string]>)
      : []),
    ['DynamicUser', 'yes'],
    ['StateDirectory', 'tunnel-relay'],
    ['StateDirectoryMode', '0700'],
    ['WorkingDirectory', STATE_DIR],
    '# SIGTERM drains: connectors move to other relays, in-flight requests finish.',
    ['KillSignal', 'SIGTERM'],
    ['TimeoutStopSec', `${stopSec}s`],
    ['Restart', 'on-failure'],
    ['RestartSec', '2s'],
    ['LimitNOFILE', '1048576'],
    '# Public listeners may use ports below 1024; nothing else is granted.',
    ['AmbientCapabilities', 'CAP_NET_BIND_SERVICE'],
    ['CapabilityBoundingSet', 'CAP_NET_BIND_SERVICE'],
    ...hardening(),
    '',
    '[Install]',
    ['WantedBy', 'multi-user.target'],
  ];
  return unitHeader('tunnel-relay service install', 'tunnel-relay service uninstall') + renderUnit(lines);
}

export function renderRelayConfig(o: RelayServiceOptions): string {
  const listen: Record<string, string> = {};
  for (const [k, v] of Object.entries(o.listen)) if (v) listen[k] = v;
  const doc: Record<string, unknown> = {
    ...(o.id ? { id: o.id } : {}),
    ...(o.region ? { region: o.region } : {}),
    store: o.store,
    listen,
    ...(o.advertiseHost ? { 'advertise-host': o.advertiseHost } : {}),
    ...(o.insecureHttpControl && !o.tls ? { 'insecure-http-control': true } : {}),
    'drain-timeout': `${o.drainTimeoutMs}ms`,
    'drain-delay': `${o.drainDelayMs}ms`,
    log: { level: 'info', format: 'json' },
  };
  return (
    '# tunnel-relay serve settings (written by `tunnel-relay service install`).\n' +
    '# The fleet key, the operator key and TLS files come from systemd credentials\n' +
    `# (see ${UNIT_NAME}); flags and TUNNEL_RELAY_* variables override this file.\n` +
    stringify(doc)
  );
}

export function registerRelayServiceCommands(program: Command): void {
  const service = program.command('service').description('run this relay as a systemd service');
  const install = service.command('install');
  // serve's settings first (from the one table), then what only an install takes.
  for (const name of SERVE_OPTION_NAMES) install.addOption(serviceOption(name));
  install
    .description(`write ${UNIT_NAME} (hardened) and relay.yml, install the keys, and start it`)
    .addOption(new Option('--unit-dir <dir>', 'where the unit goes').env('TUNNEL_RELAY_UNIT_DIR').default('/etc/systemd/system'))
    .addOption(new Option('--config-dir <dir>', 'where relay.yml and the keys go').env('TUNNEL_RELAY_CONFIG_DIR').default('/etc/tunnel-relay'))
    .option('--keys <file>', 'fleet key file to install (default: keep the installed one, or generate a new fleet key)')
    .option('--operator-key-file <file>', 'operator key to install (default: keep the installed one, or generate one)')
    .option('--tls-cert <file>', 'certificate (PEM) to install for HTTPS and wss://')
    .option('--tls-key <file>', 'private key (PEM) to install')
    .option('--exec <command>', 'command that runs tunnel-relay (default: this node and this CLI)')
    .option('--allow-hidden-exec', 'write the unit even when the command lies under /home, /root, /run/user or /tmp (only where a drop-in relaxes ProtectHome/PrivateTmp)')
    .option('--force', 'replace an existing relay.yml (keys are never replaced: remove them yourself)')
    .option('--dry-run', 'print the unit and relay.yml instead of writing anything')
    .option('--no-start', 'do not run systemctl daemon-reload / enable --now')
    .action((o) => {
      const opts: RelayServiceOptions = {
        unitDir: resolve(o.unitDir),
        configDir: resolve(o.configDir),
        exec: o.exec ? splitCommand(o.exec) : defaultExec(),
        store: o.store,
        region: o.region,
        id: o.id,
        listen: { http: o.http, https: o.https, connect: o.connect, control: o.control, peer: o.peer, metrics: o.metrics },
        advertiseHost: o.advertiseHost,
        drainTimeoutMs: durationOption('drain-timeout', o.drainTimeout),
        drainDelayMs: durationOption('drain-delay', o.drainDelay),
        tls: !!(o.tlsCert && o.tlsKey),
        insecureHttpControl: !!o.insecureHttpControl,
      };
      if (o.https && !opts.tls) throw new ServiceError('--https needs --tls-cert and --tls-key');
      // The relay would refuse these at start; say so now, where the flags are (relay.yml takes them as written).
      const addr = (flag: 'http' | 'https' | 'connect' | 'control' | 'peer' | 'metrics') => {
        const a = o[flag] as string | undefined;
        if (!a || (a === 'off' && flag !== 'connect')) return undefined;
        try {
          return parseListen(a);
        } catch (e) {
          if (e instanceof HostPortError) throw new ServiceError(`--${flag}: ${e.message}`);
          throw e;
        }
      };
      const listen = { http: addr('http'), https: addr('https'), connect: addr('connect'), control: addr('control'), peer: addr('peer'), metrics: addr('metrics') };
      if (!opts.tls) {
        try {
          checkPlainListeners({ connect: listen.connect, control: listen.control, peer: listen.peer }, opts.insecureHttpControl ?? false);
        } catch (e) {
          if (e instanceof TlsConfigError) throw new ServiceError(e.message);
          throw e;
        }
      }
      const unit = renderRelayUnit(opts);
      const config = renderRelayConfig(opts);
      const unitPath = join(opts.unitDir, UNIT_NAME);
      const cfgPath = join(opts.configDir, 'relay.yml');
      if (o.dryRun) {
        say(`# ${unitPath}\n${unit}\n# ${cfgPath}\n${config}`);
        return;
      }
      try {
        if (!o.allowHiddenExec) checkRunnableInstall(opts.exec, 'tunnel-relay', process.argv.slice(process.argv.indexOf('install') + 1), !!o.exec);
      } catch (e) {
        throw e instanceof HiddenInstallError ? new ServiceError(e.message) : e;
      }
      mkdirSync(opts.configDir, { recursive: true, mode: 0o755 });
      if (existsSync(cfgPath) && !o.force) say(`kept     ${cfgPath} (exists; --force replaces it)`);
      else writeUnitFile(cfgPath, config, 0o644);

      const keyPath = join(opts.configDir, 'fleet-key.json');
      if (o.keys) {
        loadKeyFile(o.keys); // refuse to install something that is not a key file
        if (existsSync(keyPath) && readFileSync(keyPath, 'utf8') !== readFileSync(o.keys, 'utf8')) {
          throw new ServiceError(`${keyPath} exists and differs from ${o.keys}; replacing a fleet key invalidates every credential issued: remove it first if you mean it`);
        }
        copySecret(o.keys, keyPath);
      } else if (existsSync(keyPath)) {
        say(`kept     ${keyPath}`);
      } else {
        generateKeyFile(keyPath);
        chmodSync(keyPath, 0o600);
        say(`wrote    ${keyPath} (new fleet key, mode 0600; copy it to every relay of this fleet)`);
      }
      const opPath = join(opts.configDir, 'operator-key');
      if (o.operatorKeyFile) copySecret(o.operatorKeyFile, opPath);
      else if (existsSync(opPath)) say(`kept     ${opPath}`);
      else {
        writeFileSync(opPath, randomBytes(24).toString('base64url') + '\n', { mode: 0o600 });
        chmodSync(opPath, 0o600);
        say(`wrote    ${opPath} (new operator key, mode 0600: the dashboard login)`);
      }
      if (opts.tls) {
        copySecret(o.tlsCert, join(opts.configDir, 'tls-cert.pem'));
        copySecret(o.tlsKey, join(opts.configDir, 'tls-key.pem'));
      }
      mkdirSync(opts.unitDir, { recursive: true });
      writeUnitFile(unitPath, unit, 0o644);
      activate(opts.unitDir, o.start !== false, [['daemon-reload'], ['enable', '--now', UNIT_NAME]]);
    });
  service
    .command('uninstall')
    .description(`stop and remove ${UNIT_NAME} (relay.yml and keys stay unless --purge)`)
    .addOption(new Option('--unit-dir <dir>', 'where the unit is').env('TUNNEL_RELAY_UNIT_DIR').default('/etc/systemd/system'))
    .addOption(new Option('--config-dir <dir>', 'where relay.yml and the keys are').env('TUNNEL_RELAY_CONFIG_DIR').default('/etc/tunnel-relay'))
    .option('--purge', 'also remove relay.yml, the fleet key and the operator key')
    .option('--dry-run', 'print what would be removed')
    .action((o) => {
      const unitPath = join(resolve(o.unitDir), UNIT_NAME);
      const cfgDir = resolve(o.configDir);
      const files = [unitPath, ...(o.purge ? ['relay.yml', 'fleet-key.json', 'operator-key', 'tls-cert.pem', 'tls-key.pem'].map((f) => join(cfgDir, f)) : [])];
      if (o.dryRun) return say(files.filter((f) => existsSync(f)).map((f) => `would remove ${f}`).join('\n') || 'nothing installed');
      if (!existsSync(unitPath)) say(`no ${unitPath}: not installed`);
      activate(resolve(o.unitDir), true, [['disable', '--now', UNIT_NAME]]);
      for (const f of files) if (existsSync(f)) removeFile(f);
      activate(resolve(o.unitDir), true, [['daemon-reload']], true);
      if (!o.purge) say(`kept     ${cfgDir} (--purge removes relay.yml and the keys); data in ${STATE_DIR} is kept`);
    });
}






function splitCommand(s: string): string[] {
  return s.trim().split(/\s+/);
}





function copySecret(from: string, to: string): void {
  copyFileSync(from, to);
  chmodSync(to, 0o600);
  say(`wrote    ${to} (mode 0600, from ${from})`);
}

function removeFile(path: string): void {
  rmSync(path, { force: true });
  say(`removed  ${path}`);
}


