import { isIPv6 } from 'node:net';
import { normalizeHostname } from './hostname.js';

// One grammar for every address a daemon listens on: the connector's
// --metrics and config.yml `metrics:`, the relay's --http/--https/--connect/
// --control/--peer/--metrics and relay.yml `listen:`. The two daemons had a
// copy each (and relay.yml a third, a regex that let port 99999 through to
// fail at start without a line number). Only the host a bare port means
// differs: the connector's status server stays on loopback, a relay's public
// listeners face every interface.

/** Where to listen: a host name, an IPv4 address or an IPv6 address (without brackets), and a port (0: any free one). */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export type HostPortSetting = { readonly value: HostPort } | { readonly problem: string };

const FORMS = 'expected HOST:PORT, :PORT or PORT';

/**
 * Checks `HOST:PORT`, `:PORT`, `PORT` or `[IPv6]:PORT` (a YAML integer is a
 * PORT); the two short forms mean `defaultHost`. The problem, when there is
 * one, quotes the text and says what is wrong with it, for the caller to
 * prefix with the flag or key it came from.
 */
export function hostPortSetting(raw: string | number, defaultHost: string): HostPortSetting {
  if (typeof raw === 'number' && !Number.isInteger(raw)) return { problem: `${raw} is not a port (${FORMS})` };
  const text = String(raw).trim();
  const q = JSON.stringify(text);
  if (text === '') return { problem: `empty address (${FORMS})` };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return { problem: `${q} is a URL: give HOST:PORT, without a scheme or path` };
  let host: string;
  let portText: string | undefined;
  let bracketed = false;
  const v6 = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
  const pair = /^([^:]*):([^:]*)$/.exec(text);
  if (/^\d+$/.test(text)) [host, portText] = ['', text];
  else if (v6) [host, portText, bracketed] = [v6[1]!, v6[2], true];
  else if (pair) [host, portText] = [pair[1]!, pair[2]!];
  else {
    // Two or more colons outside brackets: an IPv6 address, perhaps with a port.
    const tail = /^(.*):(\d+)$/.exec(text);
    if (!text.startsWith('[') && (text.match(/:/g)?.length ?? 0) >= 2) {
      return { problem: `${q}: put an IPv6 host in brackets, as ${tail && isIPv6(tail[1]!) ? `[${tail[1]}]:${tail[2]}` : '[::1]:PORT'}` };
    }
    return { problem: `${q} is not an address (${FORMS})` };
  }
  if (portText === undefined) return { problem: `${q} has no port (expected [${host}]:PORT)` };
  if (bracketed && !isIPv6(host)) return { problem: `${q}: ${JSON.stringify(host)} in brackets is not an IPv6 address` };
  if (!bracketed && host !== '' && !isHostName(host)) return { problem: `${q}: ${JSON.stringify(host)} is not a host name or an IP address` };
  if (!/^\d+$/.test(portText)) return { problem: `${q}: the port ${JSON.stringify(portText)} is not a number from 0 to 65535` };
  const port = Number(portText);
  if (port > 65535) return { problem: `${q}: port ${port} is out of range (0 to 65535)` };
  return { value: { host: host || defaultHost, port } };
}

/** A host name or IPv4 address: the system's one hostname grammar, without its wildcard. */
function isHostName(host: string): boolean {
  if (host.includes('*')) return false;
  try {
    normalizeHostname(host);
    return true;
  } catch {
    return false;
  }
}

/** An address that does not fit the grammar; the message says why (without the flag or key, which the caller adds). */
export class HostPortError extends Error {
  override readonly name = 'HostPortError';
}

/** hostPortSetting, throwing a HostPortError for a problem. */
export function parseHostPort(raw: string | number, defaultHost: string): HostPort {
  const r = hostPortSetting(raw, defaultHost);
  if ('problem' in r) throw new HostPortError(r.problem);
  return r.value;
}

/** The inverse, as a flag or config file takes it back: an IPv6 host in brackets. */
export function formatHostPort(a: HostPort): string {
  return `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}
