// The file store's ceiling on live tunnels per group (Store.claimTunnelSlot):
// counted in this process's memory, as the file store serves one relay. The
// Redis store does the same in one Lua script, fleet-wide (scripts.ts).

interface Group {
  readonly members: Set<string>;
  expiresAt: number;
}

export class MemoryTunnelSlots {
  private readonly groups = new Map<string, Group>();

  /** `exists` says whether a recorded tunnel is still there (a deleted one frees its slot). */
  claim(group: string, tunnelId: string, max: number, ttlMs: number, exists: (tunnelId: string) => boolean, now = Date.now()): boolean {
    // Groups nobody claimed in for their lifetime go: the map holds only recent groups.
    for (const [key, g] of this.groups) if (g.expiresAt <= now) this.groups.delete(key);
    let g = this.groups.get(group);
    if (!g) this.groups.set(group, (g = { members: new Set(), expiresAt: now + ttlMs }));
    for (const id of g.members) if (!exists(id)) g.members.delete(id);
    if (!g.members.has(tunnelId) && g.members.size >= max) return false;
    g.members.add(tunnelId);
    g.expiresAt = now + ttlMs;
    return true;
  }
}
