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

describe('TunnelConnections: last resort, listing and change notices', () => {
  it('among relay-draining connections the one with the fewest streams in flight is the last resort; the excluded one never is', () => {
    const t = new TunnelConnections();
    const busy = conn('t1', { inflight: 9, usable: false, lastResort: true });
    const idle = conn('t1', { inflight: 2, usable: false, lastResort: true });
    const busier = conn('t1', { inflight: 12, usable: false, lastResort: true });
    [busy, idle, busier].forEach((x) => t.add(x));
    expect(t.pick('t1')).toBe(idle);
    expect(t.pick('t1', idle)).toBe(busy);
    const only = new TunnelConnections();
    only.add(idle);
    expect(only.pick('t1', idle)).toBeUndefined();
  });

  it('lists the connections of one tunnel and of all tunnels, and forgets them as they go', () => {
    const t = new TunnelConnections();
    const a = conn('t1', { inflight: 0 });
    const b = conn('t1', { inflight: 0 });
    const c = conn('t2', { inflight: 0 });
    [a, b, c].forEach((x) => t.add(x));
    expect(t.forTunnel('t1')).toEqual([a, b]);
    expect(t.forTunnel('t2')).toEqual([c]);
    expect(t.forTunnel('t3')).toEqual([]);
    expect(t.list()).toEqual([a, b, c]);
    expect(t.size).toBe(3);
    t.remove(a);
    (c as unknown as EventEmitter).emit('closed', 'gone');
    expect(t.forTunnel('t1')).toEqual([b]);
    expect(t.forTunnel('t2')).toEqual([]);
    expect(t.list()).toEqual([b]);
    expect(t.size).toBe(1);
    // The lists are copies: changing one does not change the set.
    t.list().pop();
    t.forTunnel('t1').pop();
    expect(t.list()).toEqual([b]);
    expect(t.pick('t1')).toBe(b);
  });

  it('tells its listeners of every join, leave and state change, once each, until they unsubscribe', () => {
    const t = new TunnelConnections();
    let first = 0;
    let second = 0;
    const off = t.onChange(() => first++);
    t.onChange(() => second++);
    const a = conn('t1', { inflight: 0 });
    const b = conn('t2', { inflight: 0 });
    t.add(a);
    t.add(b);
    expect([first, second]).toEqual([2, 2]);
    t.changed(); // a connection started draining
    expect([first, second]).toEqual([3, 3]);
    t.remove(a);
    t.remove(a); // already gone: no notice
    (a as unknown as EventEmitter).emit('closed', 'gone'); // closes after removal: no notice either
    expect([first, second]).toEqual([4, 4]);
    off();
    (b as unknown as EventEmitter).emit('closed', 'gone');
    expect([first, second]).toEqual([4, 5]);
  });
});
