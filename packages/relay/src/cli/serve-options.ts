import { hostname } from 'node:os';
import { Option } from 'commander';

/**
 * The `tunnel-relay serve` options that `tunnel-relay service install`
 * writes into relay.yml for it, declared once: flag, help, default (in the
 * form relay.yml takes) and environment variable. `serve` and `service
 * install` both build their options from here, so a default cannot differ
 * between them by accident (the lists were once copied and had drifted).
 * Where an installed relay means another default on purpose, the entry says
 * so in `service`, with why.
 */

export const SERVICE_STATE_DIR = '/var/lib/tunnel-relay';

interface ServeOptionDecl {
  readonly flags: string;
  readonly help: string;
  /** What `serve` takes when neither the flag nor relay.yml says; absent: unset (off). */
  readonly default?: string | boolean;
  readonly env?: string;
  /** An installed relay's own default, and why it differs. */
  readonly service?: { readonly default: () => string; readonly why: string };
}

export const SERVE_OPTIONS = {
  store: {
    flags: '--store <url>',
    help: 'fleet store: file:DIR (embedded) or redis://HOST:PORT',
    env: 'TUNNEL_RELAY_STORE',
    service: { default: () => `file:${SERVICE_STATE_DIR}/store`, why: 'a service keeps its data in its StateDirectory' },
  },
  id: { flags: '--id <id>', help: 'relay node id (default: HOSTNAME-RANDOM)' },
  region: { flags: '--region <name>', help: 'region label shown to operators', default: 'local' },
  http: { flags: '--http <addr>', help: 'public HTTP listener (HOST:PORT, :PORT; "off" to disable)', default: ':8080' },
  https: { flags: '--https <addr>', help: 'public HTTPS listener (needs --tls-cert/--tls-key, or --acme-directory)' },
  connect: { flags: '--connect <addr>', help: 'connector endpoint listener', default: ':7844' },
  control: { flags: '--control <addr>', help: 'control API and dashboard listener ("off" to disable)', default: ':7000' },
  peer: { flags: '--peer <addr>', help: 'relay-to-relay forwarding listener ("off" to disable)', default: ':7845' },
  metrics: {
    flags: '--metrics <addr>',
    help: 'serve Prometheus /metrics on HOST:PORT (default: off)',
    service: { default: () => '127.0.0.1:9464', why: 'an installed relay is scraped; loopback only, so nothing is exposed' },
  },
  advertiseHost: {
    flags: '--advertise-host <host>',
    help: 'host name connectors and peers use to reach this relay',
    default: '127.0.0.1',
    service: { default: () => hostname(), why: 'an installed relay is reached from other machines, by this machine\'s name' },
  },
  drainTimeout: { flags: '--drain-timeout <duration>', help: 'how long SIGTERM waits for in-flight requests', default: '30s' },
  drainDelay: { flags: '--drain-delay <duration>', help: 'on SIGTERM, keep serving this long after reporting draining (for load balancers)', default: '1s' },
  insecureHttpControl: {
    flags: '--insecure-http-control',
    help: 'without --tls-cert: serve the connector endpoint, control API and peer endpoint in plain HTTP on non-loopback addresses (only behind a TLS-terminating proxy or on a trusted network)',
    default: false,
  },
} as const satisfies Record<string, ServeOptionDecl>;

export type ServeOptionName = keyof typeof SERVE_OPTIONS;
export const SERVE_OPTION_NAMES = Object.keys(SERVE_OPTIONS) as ServeOptionName[];

/** The option as `serve` takes it. */
export function serveOption(name: ServeOptionName): Option {
  const d: ServeOptionDecl = SERVE_OPTIONS[name];
  const o = new Option(d.flags, d.help);
  if (d.env) o.env(d.env);
  if (d.default !== undefined) o.default(d.default);
  return o;
}

/**
 * The option as `service install` takes it: serve's, with the service's own
 * default where the table declares one. No environment variable: the values
 * are written into relay.yml, and an install takes only what it is told.
 */
export function serviceOption(name: ServeOptionName): Option {
  const d: ServeOptionDecl = SERVE_OPTIONS[name];
  // serve's own "(default: off)" in the words would contradict the service's.
  const o = new Option(d.flags, d.service ? d.help.replace(/ \(default: [^)]*\)$/, '') : d.help);
  if (d.service) o.default(d.service.default());
  else if (d.default !== undefined) o.default(d.default);
  return o;
}
