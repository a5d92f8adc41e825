import type { ConnectorConnection } from './connector-connection.js';

/**
 * The connector connections this relay holds, by tunnel. Picking is per
 * request: the usable connection with the fewest streams in flight.
 */
export class TunnelConnections {
  private readonly byTunnel = new Map<string, Set<ConnectorConnection>>();
  private readonly all = new Set<ConnectorConnection>();
  private readonly listeners = new Set<() => void>();

  add(conn: ConnectorConnection): void {
    let set = this.byTunnel.get(conn.id.tunnelId);
    if (!set) this.byTunnel.set(conn.id.tunnelId, (set = new Set()));
    set.add(conn);
    this.all.add(conn);
    conn.once('closed', () => this.remove(conn));
    this.changed();
  }

  remove(conn: ConnectorConnection): void {
    const set = this.byTunnel.get(conn.id.tunnelId);
    if (set?.delete(conn) && set.size === 0) this.byTunnel.delete(conn.id.tunnelId);
    if (this.all.delete(conn)) this.changed();
  }

  pick(tunnelId: string, exclude?: ConnectorConnection): ConnectorConnection | undefined {
    const set = this.byTunnel.get(tunnelId);
    if (!set) return undefined;
    let best: ConnectorConnection | undefined;
    let fallback: ConnectorConnection | undefined;
    for (const c of set) {
      if (c === exclude) continue;
      if (c.usable) {
        if (!best || c.inflight < best.inflight) best = c;
      } else if (!best && c.lastResort && (!fallback || c.inflight < fallback.inflight)) {
        fallback = c;
      }
    }
    // A draining connection still serves if it is all there is: during a
    // rolling deploy that beats answering 530 while the connector moves.
    return best ?? fallback;
  }


  forTunnel(tunnelId: string): ConnectorConnection[] {
    return [...(this.byTunnel.get(tunnelId) ?? [])];
  }

  list(): ConnectorConnection[] {
    return [...this.all];
  }

  get size(): number {
    return this.all.size;
  }

  /** Called whenever the set changes (presence publishing hooks in here). */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Active or draining connections also change state without joining/leaving. */
  changed(): void {
    for (const fn of this.listeners) fn();
  }
}
