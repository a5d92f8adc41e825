import { readFileSync } from 'node:fs';
import { Pool } from 'undici';
import type { OriginRequestConfig, Service } from '../ingress/config-types.js';

/**
 * One keep-alive pool per origin and originRequest settings. undici retires
 * a pooled socket `keepAliveTimeoutThreshold` before the origin's advertised
 * `Keep-Alive: timeout=N`, so a request is not written into a socket the
 * origin is about to close (the classic spurious 502); for origins that
 * advertise nothing, `keepAliveTimeout` bounds idle sockets.
 */
export class OriginPools {
  private readonly pools = new Map<string, Pool>();
  private readonly cas = new Map<string, Buffer>();
  /** Per compiled rule, so the hot path skips building the key (a reload makes new rules). */
  private readonly byRule = new WeakMap<object, Pool>();

  forRule(rule: { service: Service; originRequest: OriginRequestConfig }): Pool {
    let p = this.byRule.get(rule);
    if (!p) {
      p = this.get(rule.service as Extract<Service, { kind: 'http' | 'unix' }>, rule.originRequest);
      this.byRule.set(rule, p);
    }
    return p;
  }

  get(service: Extract<Service, { kind: 'http' | 'unix' }>, o: OriginRequestConfig): Pool {
    const origin = service.kind === 'http' ? service.url.origin : 'http://localhost';
    const socketPath = service.kind === 'unix' ? service.socketPath : undefined;
    const key = `${origin}|${socketPath ?? ''}|${o.connectTimeout}|${o.keepAliveConnections}|${o.keepAliveTimeout}|${o.originServerName ?? ''}|${o.caPool ?? ''}|${o.noTLSVerify}|${o.idleTimeout}`;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = new Pool(origin, {
        // undici's `connections` caps *concurrent* sockets; cloudflared's
        // keepAliveConnections caps *idle* ones. Capping concurrency would
        // queue request 101 behind 100 long-lived streams (SSE, long polls),
        // so concurrency is unbounded here and idle sockets are retired by
        // keepAliveTimeout.
        connections: null,
        keepAliveTimeout: o.keepAliveTimeout,
        keepAliveMaxTimeout: o.keepAliveTimeout,
        keepAliveTimeoutThreshold: 1_000,
        // No fixed read deadline: only the configured idle timeout (0 = none).
        headersTimeout: o.idleTimeout,
        bodyTimeout: o.idleTimeout,
        connectTimeout: o.connectTimeout,
        ...(socketPath ? { socketPath } : {}),
        connect: { timeout: o.connectTimeout, ...this.tls(o) },
      });
      this.pools.set(key, pool);
    }
    return pool;
  }

  /**
   * TLS options for an https origin, the same for pooled requests and for
   * WebSocket upgrades (which do not go through a pool): caPool replaces the
   * system CAs, originServerName sets SNI and the name checked, noTLSVerify
   * turns the check off. The CA file is read once per path.
   */
  tls(o: OriginRequestConfig): { rejectUnauthorized: boolean; servername?: string; ca?: Buffer } {
    let ca: Buffer | undefined;
    if (o.caPool) {
      ca = this.cas.get(o.caPool);
      if (!ca) this.cas.set(o.caPool, (ca = readFileSync(o.caPool)));
    }
    return {
      rejectUnauthorized: !o.noTLSVerify,
      ...(o.originServerName ? { servername: o.originServerName } : {}),
      ...(ca ? { ca } : {}),
    };
  }

  async close(): Promise<void> {
    const all = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(all.map((p) => p.close().catch(() => p.destroy())));
  }
}
