import { Option } from 'commander';
import { durationSetting, hostPortSetting, type HostPort } from '@tunnel/protocol';

/**
 * The `tunnel run` settings that `tunnel service install` writes for it (and
 * `tunnel quick` shares), declared once: flag, config.yml key, unit, default
 * and help. `run`, `service install`, `quick` and the config.yml schema all
 * read their default from here, so none can drift from another (they once
 * did: `--ha-connections` and `--metrics` had a default only in the service).
 */

/** A flag or config value that does not fit its setting; the message names the flag. */
export class RunSettingError extends Error {}

type Parsed<T> = { readonly value: T } | { readonly problem: string };

interface RunSetting<T> {
  /** The config.yml key; the flag is `--${key}`. */
  readonly key: string;
  /** What the flag takes, as help shows it. */
  readonly arg: '<n>' | '<duration>' | '<addr>';
  readonly help: string;
  /** What `run` takes when neither the flag nor config.yml says, spelled as config.yml would; undefined: off. */
  readonly default: number | string | undefined;
  readonly parse: (raw: string) => Parsed<T>;
}

/** Connections a connector keeps: at least one, at most 16 (the relay takes indexes up to MAX_CONN_INDEX). */
export const HA_CONNECTIONS = { min: 1, max: 16 } as const;

function count(min: number, max: number) {
  return (raw: string): Parsed<number> => {
    const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
    return Number.isInteger(n) && n >= min && n <= max ? { value: n } : { problem: `expected a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}` };
  };
}

function duration(raw: string): Parsed<number> {
  const r = durationSetting(raw);
  return 'problem' in r ? r : { value: r.ms };
}

/** HOST:PORT, :PORT or PORT (loopback: a status server is not exposed unless asked), [IPv6]:PORT. */
function address(raw: string): Parsed<HostPort> {
  return hostPortSetting(raw, '127.0.0.1');
}

export const RUN_SETTINGS = {
  haConnections: {
    key: 'ha-connections',
    arg: '<n>',
    help: 'connections to keep, spread over the relays',
    default: 4,
    parse: count(HA_CONNECTIONS.min, HA_CONNECTIONS.max),
  } satisfies RunSetting<number>,
  gracePeriod: {
    key: 'grace-period',
    arg: '<duration>',
    help: 'how long SIGTERM waits for in-flight requests (e.g. 30s)',
    default: '30s',
    parse: duration,
  } satisfies RunSetting<number>,
  discoveryInterval: {
    key: 'discovery-interval',
    arg: '<duration>',
    help: 'how often to ask for the fleet\'s live relay list',
    default: '5s',
    parse: duration,
  } satisfies RunSetting<number>,
  metrics: {
    key: 'metrics',
    arg: '<addr>',
    help: 'serve /ready, /healthcheck and /metrics on HOST:PORT',
    default: undefined,
    parse: address,
  } satisfies RunSetting<HostPort>,
} as const;

export type RunSettingName = keyof typeof RUN_SETTINGS;
type ValueOf<N extends RunSettingName> = (typeof RUN_SETTINGS)[N] extends RunSetting<infer T> ? T : never;

/**
 * The one place a service differs from `run` on purpose: an installed
 * connector serves /ready and /metrics on this address, so systemd, a load
 * balancer and Prometheus have something to probe; `run` by hand binds no
 * port unless asked (two connectors on one machine would collide).
 */
export const SERVICE_METRICS = '127.0.0.1:20241';

/**
 * The commander option of a setting, for `run`, `service install` or
 * `quick`; `defaultValue` only where that command means another (documented) one.
 * No commander default: a flag that is not given leaves config.yml's value
 * standing, and help still shows the default.
 */
export function runOption(name: RunSettingName, o: { help?: string; defaultValue?: string } = {}): Option {
  const s: RunSetting<unknown> = RUN_SETTINGS[name];
  const shown = o.defaultValue ?? (s.default === undefined ? 'off' : String(s.default));
  return new Option(`--${s.key} ${s.arg}`, `${o.help ?? s.help} (default: ${shown})`);
}

/** Where the run token comes from and what to publish, for `run` and `service install` alike. */
export function sourceOptions(): Option[] {
  return [
    new Option('--token <token>', 'tunnel run token (prefer TUNNEL_TOKEN or --token-file: they stay out of `ps`)').env('TUNNEL_TOKEN'),
    new Option('--token-file <file>', 'read the run token from this file').env('TUNNEL_TOKEN_FILE'),
    new Option('--credentials-file <file>', 'tunnel credentials file (<TUNNEL-ID>.json)'),
    new Option('--url <url>', 'publish this one origin (instead of ingress rules)'),
    new Option(
      '--relay <url...>',
      'relays to dial: any URL of a relay (public, control API or connector endpoint; ws:// and wss:// are taken as the endpoint itself); default: from the config or the credential',
    ),
  ];
}

/** A setting's value from its flag; a usage error naming the flag when it does not fit. */
export function runFlag<N extends RunSettingName>(name: N, raw: string): ValueOf<N> {
  const r = (RUN_SETTINGS[name] as RunSetting<ValueOf<N>>).parse(String(raw));
  if ('problem' in r) throw new RunSettingError(`--${RUN_SETTINGS[name].key}: ${r.problem}`);
  return r.value;
}

/** A setting's default, in its value's form (undefined: off). */
export function runDefault<N extends RunSettingName>(name: N): ValueOf<N> | undefined {
  const s = RUN_SETTINGS[name] as RunSetting<ValueOf<N>>;
  if (s.default === undefined) return undefined;
  const r = s.parse(String(s.default));
  if ('problem' in r) throw new Error(`run-settings: the default of ${s.key} does not parse: ${r.problem}`);
  return r.value;
}
