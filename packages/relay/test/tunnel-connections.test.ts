import { describe, expect, it } from 'vitest';
import { EventEmitter } from 'node:events';
import { TunnelConnections } from '../src/connectors/tunnel-connections.js';
import type { ConnectorConnection } from '../src/connectors/connector-connection.js';

// The per-request choice: the usable connection with the fewest streams in
// flight; a relay-draining one only as a last resort; never a leaving one.

function conn(tunnelId: string, o: { inflight: number; usable?: boolean; lastResort?: boolean }): ConnectorConnection {
  const c = Object.assign(new EventEmitter(), {
    id: { tunnelId },
    inflight: o.inflight,
    usable: o.usable ?? true,
    lastResort: o.lastResort ?? false,
  });
  return c as unknown as ConnectorConnection;
}

describe('TunnelConnections.pick', () => {
  it('takes the usable connection with the fewest streams in flight', () => {
    const t = new TunnelConnections();
    const a = conn('t1', { inflight: 3 });
    const b = conn('t1', { inflight: 1 });
    const c = conn('t1', { inflight: 2 });
    [a, b, c].forEach((x) => t.add(x));
    expect(t.pick('t1')).toBe(b);
    (b as unknown as { inflight: number }).inflight = 5;
    expect(t.pick('t1')).toBe(c);
    expect(t.pick('t1', c)).toBe(a); // a retry avoids the connection that failed
    expect(t.pick('t2')).toBeUndefined();
  });

  it('never picks a draining connection while a usable one exists; uses a relay-draining one as last resort', () => {
    const t = new TunnelConnections();
    const draining = conn('t1', { inflight: 0, usable: false, lastResort: true });
    const busy = conn('t1', { inflight: 50 });
    t.add(draining);
    t.add(busy);
    expect(t.pick('t1')).toBe(busy);
    t.remove(busy);
    expect(t.pick('t1')).toBe(draining);
    const leaving = conn('t2', { inflight: 0, usable: false, lastResort: false });
    t.add(leaving);
    expect(t.pick('t2')).toBeUndefined();
  });

  it('forgets a connection when it closes', () => {
    const t = new TunnelConnections();
    const a = conn('t1', { inflight: 0 });
    t.add(a);
    expect(t.size).toBe(1);
    (a as unknown as EventEmitter).emit('closed', 'gone');
    expect(t.size).toBe(0);
    expect(t.pick('t1')).toBeUndefined();
  });
});
