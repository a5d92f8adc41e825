import type { LimitHits } from '../relay-limits.js';

export type LoginAdmission = { ok: true } | { ok: false; limit: 'pending_logins' | 'pending_logins_per_ip'; message: string };

/**
 * Pending `tunnel login` sessions created through this relay, in total and
 * per client IP. A slot is taken before the store write and given back when
 * the session is handed out, fails to be created, or expires (the store
 * collects the expired record itself).
 */
export class LoginAdmissions {
  private readonly byCode = new Map<string, { ip: string; expiresAt: number }>();
  private readonly perIp = new Map<string, number>();

  constructor(
    private readonly limits: { pendingLogins: number; pendingLoginsPerIp: number },
    private readonly hits: LimitHits,
  ) {}

  get pending(): number {
    this.collect();
    return this.byCode.size;
  }

  admit(ip: string, code: string, expiresAt: number): LoginAdmission {
    this.collect();
    const fromIp = this.perIp.get(ip) ?? 0;
    if (this.limits.pendingLogins > 0 && this.byCode.size >= this.limits.pendingLogins) {
      this.hits.hit('pending_logins');
      return { ok: false, limit: 'pending_logins', message: `this relay has ${this.byCode.size} pending logins (limit ${this.limits.pendingLogins}); retry later` };
    }
    if (this.limits.pendingLoginsPerIp > 0 && fromIp >= this.limits.pendingLoginsPerIp) {
      this.hits.hit('pending_logins_per_ip');
      return { ok: false, limit: 'pending_logins_per_ip', message: `your address has ${fromIp} pending logins (limit ${this.limits.pendingLoginsPerIp}); finish or let them expire first` };
    }
    this.byCode.set(code, { ip, expiresAt });
    this.perIp.set(ip, fromIp + 1);
    return { ok: true };
  }

  release(code: string): void {
    const e = this.byCode.get(code);
    if (!e) return;
    this.byCode.delete(code);
    const n = (this.perIp.get(e.ip) ?? 1) - 1;
    if (n <= 0) this.perIp.delete(e.ip);
    else this.perIp.set(e.ip, n);
  }

  /** Insertion order is creation order, and every session has the same TTL: expired ones are at the front. */
  private collect(): void {
    const now = Date.now();
    for (const [code, e] of this.byCode) {
      if (e.expiresAt > now) break;
      this.release(code);
    }
  }
}
