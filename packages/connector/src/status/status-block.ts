import { request } from 'undici';
import { relayTrust } from '../origin/ca-trust.js';
import type { HAManager, ConnectionInfo } from '../ha/ha-manager.js';

export interface StatusBlockInfo {
  connectorId: string;
  tunnelName?: string;
  hostnames: string[];
  /** Where the hostnames came from: the relay's control API, or the ingress rules. */
  hostnameSource: 'api' | 'ingress' | 'none';
  connections: ConnectionInfo[];
  haConnections: number;
  metricsUrl?: string;
  logs: string;
}

/** The short block `tunnel run` prints on a terminal once connected. */
export function renderStatusBlock(i: StatusBlockInfo, color: boolean): string {
  const b = (s: string) => (color ? `\x1b[1m${s}\x1b[22m` : s);
  const g = (s: string) => (color ? `\x1b[32m${s}\x1b[39m` : s);
  const dim = (s: string) => (color ? `\x1b[2m${s}\x1b[22m` : s);
  const label = (s: string) => b(s.padEnd(18));
  const pad = ' '.repeat(18);
  const rule = dim('─'.repeat(64));
  const lines: string[] = [];
  const registered = i.connections.filter((c) => c.state === 'registered').length;
  lines.push('', `  ${g('●')} ${b(`tunnel${i.tunnelName ? ` ${i.tunnelName}` : ''} connected`)}  ${dim(`${registered}/${i.haConnections} connections · connector ${i.connectorId}`)}`, `  ${rule}`);
  const hosts = i.hostnames.length ? i.hostnames : [i.hostnameSource === 'none' ? '(none routed: `tunnel route dns NAME HOSTNAME`)' : '(catch-all ingress only)'];
  hosts.forEach((h, n) => lines.push(`  ${n === 0 ? label(i.hostnames.length > 1 ? 'Public hostnames' : 'Public hostname') : pad}${h}`));
  const conns = [...i.connections].sort((a, b) => a.index - b.index);
  if (conns.length === 0) lines.push(`  ${label('Connections')}(none yet)`);
  conns.forEach((c, n) => {
    const relay = c.relayId ? `${c.relayId}${c.region ? ` (${c.region})` : ''}` : '(connecting)';
    lines.push(`  ${n === 0 ? label('Connections') : pad}#${c.index}  ${relay.padEnd(24)} ${c.relayUrl}${c.state === 'registered' ? '' : `  ${c.state}`}`);
  });
  lines.push(`  ${label('Metrics')}${i.metricsUrl ? `${i.metricsUrl}/metrics  ${dim(`(ready: ${i.metricsUrl}/ready)`)}` : dim('off (use --metrics HOST:PORT)')}`);
  lines.push(`  ${label('Logs')}${i.logs}`);
  lines.push(`  ${rule}`, '');
  return lines.join('\n') + '\n';
}

/** Hostnames routed to this tunnel, asked of a relay's control API with the tunnel credential. */
export async function fetchHostnames(controlUrls: string[], token: string): Promise<string[] | null> {
  for (const base of controlUrls) {
    try {
      const r = await request(base.replace(/\/+$/, '') + '/v1/connector/routes', {
        dispatcher: relayTrust.dispatcher(),
        headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
        headersTimeout: 2_000,
        bodyTimeout: 2_000,
      });
      if (r.statusCode !== 200) {
        await r.body.dump();
        continue;
      }
      const j = (await r.body.json()) as { hostnames?: unknown };
      if (Array.isArray(j.hostnames)) return j.hostnames.filter((h): h is string => typeof h === 'string');
    } catch {
      /* next */
    }
  }
  return null;
}

/**
 * Print the status block once: when every connection is registered, or a
 * few seconds after the first one if some relays are slow to answer.
 */
export function showStatusBlockWhenConnected(o: {
  ha: HAManager;
  haConnections: number;
  connectorId: string;
  tunnelName?: string;
  hostnames: () => Promise<{ hostnames: string[]; source: StatusBlockInfo['hostnameSource'] }>;
  metricsUrl?: () => string | undefined;
  logs: string;
  write: (s: string) => void;
  color: boolean;
  settleMs?: number;
}): void {
  let shown = false;
  let timer: NodeJS.Timeout | null = null;
  let names: Promise<{ hostnames: string[]; source: StatusBlockInfo['hostnameSource'] }> | null = null;
  const show = async () => {
    if (shown) return;
    shown = true;
    o.ha.off('change', onChange);
    if (timer) clearTimeout(timer);
    const h = await (names ?? o.hostnames());
    o.write(
      renderStatusBlock(
        {
          connectorId: o.connectorId,
          tunnelName: o.tunnelName,
          hostnames: h.hostnames,
          hostnameSource: h.source,
          connections: o.ha.connections(),
          haConnections: o.haConnections,
          metricsUrl: o.metricsUrl?.(),
          logs: o.logs,
        },
        o.color,
      ),
    );
  };
  const onChange = () => {
    const ready = o.ha.readyConnections;
    if (ready === 0 || shown) return;
    names ??= o.hostnames().catch(() => ({ hostnames: [], source: 'none' as const }));
    if (ready >= o.haConnections) return void show().catch(() => {});
    if (!timer) {
      timer = setTimeout(() => void show().catch(() => {}), o.settleMs ?? 4_000);
      timer.unref();
    }
  };
  o.ha.on('change', onChange);
}
