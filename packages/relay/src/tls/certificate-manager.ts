import { createSecureContext, type SecureContext } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { alpnChallengeCertificate, type AcmeIssuer, type ChallengeBoard } from './acme-issuer.js';
import { checkedName, type AcmeStore, type AcmeStoreEvent, type ChallengeRecord, type StoredCertificate } from './acme-store.js';

export interface CertificateManagerOptions {
  /**
   * The route pattern that routes `name` (`name` itself, or `*.parent`), or
   * undefined: only routed names are ever ordered.
   */
  routeOf(name: string): string | undefined;
  /** A DNS hook is configured: names under a routed `*.zone` share one `*.zone` certificate (DNS-01). */
  wildcards: boolean;
  /** Longest a first handshake waits for its certificate before it gets the fallback one. */
  handshakeWaitMs: number;
  /** Orders the fleet places per hour at most (0: no ceiling); the CA's rate limits are per account. */
  ordersPerHour: number;
  /** Counts orders against `ordersPerHour`: in the fleet's Redis when it has one, so relays share the budget. */
  orderLimiter?: RateLimiterAbstract;
  /** First retry delay after a failed order; doubles per failure up to `retryMaxMs`. */
  retryBaseMs: number;
  retryMaxMs: number;
}

interface Served {
  ctx: SecureContext;
  renewAt: number;
  notBefore: number;
  notAfter: number;
  fingerprint: string;
  timer: NodeJS.Timeout | null;
}

/** Why a name has no certificate being ordered right now. */
type Backoff = { failures: number; until: number; reason: string };

/** What the dashboard's ACME line shows for one relay. */
export interface AcmeSummary {
  certificates: Array<{ name: string; notAfter: number; renewAt: number }>;
  /** Soonest planned renewal (ms since the epoch), or null without certificates. */
  nextRenewal: number | null;
  lastFailure: { name: string; reason: string; at: number; retryAt: number } | null;
  /** Names whose orders wait out a back-off now. */
  backoff: Array<{ name: string; failures: number; retryAt: number; reason: string }>;
  orders: { ok: number; failed: number; rateLimited: number };
}

export interface AcmeStats {
  certificates(): number;
  readonly orders: { ok: number; failed: number; rateLimited: number };
  backoffNames(): number;
  /** Soonest notAfter of the certificates served (ms), or 0. */
  soonestExpiry(): number;
  summary(): AcmeSummary;
}

/** An order refused by the fleet's orders-per-hour ceiling; the back-off lasts until the window frees a slot. */
class OrderCeiling extends Error {
  constructor(
    readonly limit: number,
    readonly retryMs: number,
  ) {
    super(`over the fleet's --acme-orders-per-hour (${limit}); next slot in ${Math.ceil(retryMs / 1000)} s`);
  }
}

/**
 * Certificates per hostname, from memory on the handshake path:
 *
 * - a known name is answered from the in-memory map (no store read);
 * - an unknown name that the route table routes is ordered on demand (one
 *   order at a time per name; the fleet-wide lock lets one relay order, the
 *   others wait for the store), and the handshake waits for it a bounded time;
 * - an unrouted name, a name in back-off, or one whose order did not finish
 *   in time gets the fallback certificate (and routing answers 404);
 * - a TLS-ALPN-01 validation (ALPN `acme-tls/1`, marked by the ALPN callback,
 *   which runs before the certificate is chosen) gets the challenge certificate,
 *   and nothing else ever does.
 *
 * Renewal is at two-thirds of the lifetime, up to 5% earlier at random so a
 * fleet's certificates ordered together do not all renew in one minute.
 */
export class CertificateManager implements ChallengeBoard, AcmeStats {
  private readonly served = new Map<string, Served>();
  private readonly http01 = new Map<string, string>();
  private readonly alpn01 = new Map<string, { keyAuthorization: string; ctx: Promise<SecureContext> }>();
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly backoff = new Map<string, Backoff>();
  private readonly acmeHandshakes = new WeakSet<object>();
  private lastFailure: AcmeSummary['lastFailure'] = null;
  readonly orders = { ok: 0, failed: 0, rateLimited: 0 };
  private unsubscribe: (() => void) | null = null;
  private sync: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly issuer: AcmeIssuer,
    private readonly store: AcmeStore,
    private readonly o: CertificateManagerOptions,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    this.unsubscribe = this.store.subscribe((e) => this.onStoreEvent(e));
    await this.loadAll();
    // Pub/sub is best effort (and a file store has no other writer): re-read now and then.
    this.sync = setInterval(() => void this.loadAll(), 5 * 60_000);
    this.sync.unref();
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    if (this.sync) clearInterval(this.sync);
    for (const s of this.served.values()) if (s.timer) clearTimeout(s.timer);
  }

  certificates(): number {
    return this.served.size;
  }
  backoffNames(): number {
    const now = Date.now();
    let n = 0;
    for (const b of this.backoff.values()) if (b.until > now) n++;
    return n;
  }
  soonestExpiry(): number {
    let min = 0;
    for (const s of this.served.values()) if (min === 0 || s.notAfter < min) min = s.notAfter;
    return min;
  }
  summary(): AcmeSummary {
    const now = Date.now();
    const certificates = [...this.served].map(([name, s]) => ({ name, notAfter: s.notAfter, renewAt: s.renewAt })).sort((a, b) => a.name.localeCompare(b.name));
    const backoff = [...this.backoff].filter(([, b]) => b.until > now).map(([name, b]) => ({ name, failures: b.failures, retryAt: b.until, reason: b.reason }));
    const nextRenewal = certificates.reduce<number | null>((min, c) => (min === null || c.renewAt < min ? c.renewAt : min), null);
    return { certificates, nextRenewal, lastFailure: this.lastFailure, backoff, orders: { ...this.orders } };
  }
  /** The certificate served for a name now (for tests and the dashboard). */
  fingerprint(name: string): string | undefined {
    return this.served.get(name)?.fingerprint;
  }

  /** node's ALPNCallback (`this` is the TLS socket): h2, then http/1.1; acme-tls/1 marks a TLS-ALPN-01 validation. */
  readonly alpnCallback = (socket: object, info: { servername: string; protocols: string[] }): string | undefined => {
    if (info.protocols.includes('acme-tls/1')) {
      this.acmeHandshakes.add(socket);
      return 'acme-tls/1';
    }
    return info.protocols.includes('h2') ? 'h2' : info.protocols.includes('http/1.1') ? 'http/1.1' : undefined;
  };

  /** node's SNICallback with the socket: undefined context = the fallback certificate. */
  readonly sniCallback = (socket: object, servername: string, cb: (err: Error | null, ctx?: SecureContext) => void): void => {
    const name = servername.toLowerCase().replace(/\.$/, '');
    if (this.acmeHandshakes.has(socket)) {
      return void this.challengeContext(name).then(
        (ctx) => {
          if (!ctx) this.log.info({ event: 'acme-challenge-unknown', name }, 'TLS-ALPN-01 validation for a name with no pending challenge: fallback certificate');
          cb(null, ctx);
        },
        (e: Error) => {
          this.log.warn({ event: 'acme-challenge-failed', name, err: e.message }, 'cannot answer a TLS-ALPN-01 validation');
          cb(null);
        },
      );
    }
    const known = this.lookup(name);
    if (known) return cb(null, known);
    const order = validName(name) ? this.orderName(name) : undefined;
    if (!order) return cb(null);
    const b = this.backoff.get(order);
    if (b && b.until > Date.now()) return cb(null);
    let answered = false;
    const answer = () => {
      if (answered) return;
      answered = true;
      clearTimeout(t);
      cb(null, this.lookup(name));
    };
    const t = setTimeout(answer, this.o.handshakeWaitMs);
    void this.ensure(order, 'on-demand').finally(answer);
  };

  /**
   * The certificate `name` is served from: its own, or with a DNS hook, the
   * `*.parent` one when a wildcard route routes it (one order for the zone,
   * not one per name seen). Undefined: unrouted, never ordered.
   */
  private orderName(name: string): string | undefined {
    const route = this.o.routeOf(name);
    if (route === undefined) return undefined;
    if (!this.o.wildcards || !route.startsWith('*.') || route === name) return name;
    // A wildcard certificate covers one label: a.b.zone under *.zone needs *.b.zone.
    return `*${name.slice(name.indexOf('.'))}`;
  }

  /** Still worth renewing: the name (or, for `*.parent`, the names it covers) is routed. */
  private stillRouted(certName: string): boolean {
    return this.o.routeOf(certName.startsWith('*.') ? `_renewal-probe${certName.slice(1)}` : certName) !== undefined;
  }

  /** HTTP-01: the key authorization for a token this fleet is being validated on. */
  async http01Answer(token: string): Promise<string | undefined> {
    return this.http01.get(token) ?? (await this.store.getHttpChallenge(token).catch(() => undefined));
  }

  add(rec: ChallengeRecord): void {
    if (rec.type === 'http-01') this.http01.set(rec.token, rec.keyAuthorization);
    else this.alpn01.set(rec.name, { keyAuthorization: rec.keyAuthorization, ctx: this.makeChallengeContext(rec.name, rec.keyAuthorization) });
    // Bounded: a challenge the CA never finished is forgotten with its record.
    setTimeout(() => this.remove(rec), Math.max(0, rec.expiresAt - Date.now())).unref();
  }
  remove(rec: ChallengeRecord): void {
    if (rec.type === 'http-01') this.http01.delete(rec.token);
    else this.alpn01.delete(rec.name);
  }

  private async makeChallengeContext(name: string, keyAuthorization: string): Promise<SecureContext> {
    const { key, cert } = await alpnChallengeCertificate(name, keyAuthorization);
    return createSecureContext({ key, cert });
  }

  private async challengeContext(name: string): Promise<SecureContext | undefined> {
    const local = this.alpn01.get(name);
    if (local) return local.ctx;
    const ka = await this.store.getAlpnChallenge(name).catch(() => undefined);
    return ka ? this.makeChallengeContext(name, ka) : undefined;
  }

  private lookup(name: string): SecureContext | undefined {
    const exact = this.served.get(name);
    if (exact) return exact.ctx;
    const dot = name.indexOf('.');
    return dot > 0 ? this.served.get(`*${name.slice(dot)}`)?.ctx : undefined;
  }

  /**
   * Make sure `name` has a usable certificate: from the store if another
   * relay ordered it, else ordered here under the fleet lock. One run per
   * name at a time; failures set the name's back-off.
   */
  ensure(name: string, why: 'on-demand' | 'renewal'): Promise<void> {
    const running = this.inflight.get(name);
    if (running) return running;
    const current = this.served.get(name);
    const usable = (c: StoredCertificate | undefined): c is StoredCertificate =>
      !!c && (why === 'renewal' ? !!current && c.notAfter > current.notAfter : Date.now() < renewalPoint(c));
    const run = (async () => {
      const stored = await this.store.getCertificate(name);
      if (usable(stored)) return this.install(stored);
      const release = await this.store.lock(`order ${name}`, 5 * 60_000);
      if (!release) {
        this.log.info({ event: 'acme-wait', name }, 'another relay is ordering this certificate: waiting for it in the store');
        return this.waitForStored(name, usable);
      }
      try {
        const again = await this.store.getCertificate(name);
        if (usable(again)) return this.install(again);
        await this.takeOrderSlot();
        this.log.info({ event: 'acme-order', name, why }, 'ordering a certificate');
        const cert = await this.issuer.issue(name);
        await this.store.putCertificate(cert);
        this.install(cert);
        this.orders.ok++;
        this.backoff.delete(name);
        this.log.info({ event: 'acme-issued', name, why, notAfter: new Date(cert.notAfter).toISOString(), fingerprint: this.served.get(name)?.fingerprint }, 'certificate issued');
      } finally {
        await release().catch(() => {});
      }
    })()
      .catch((e: unknown) => this.failed(name, e as Error))
      .finally(() => this.inflight.delete(name));
    this.inflight.set(name, run);
    return run;
  }

  private failed(name: string, e: Error): void {
    if (e instanceof OrderCeiling) this.orders.rateLimited++;
    else this.orders.failed++;
    const failures = (this.backoff.get(name)?.failures ?? 0) + 1;
    const exponential = Math.min(this.o.retryMaxMs, this.o.retryBaseMs * 2 ** (failures - 1));
    const delay = e instanceof OrderCeiling ? Math.max(exponential, e.retryMs) : exponential;
    const now = Date.now();
    this.backoff.set(name, { failures, until: now + delay, reason: e.message });
    this.lastFailure = { name, reason: e.message, at: now, retryAt: now + delay };
    this.log.warn({ event: 'acme-order-failed', name, failures, retryInMs: delay, rateLimited: e instanceof OrderCeiling, err: e.message }, 'certificate order failed; backing off');
    // A served certificate due for renewal is retried after the back-off.
    const s = this.served.get(name);
    if (s && !this.stopped) {
      s.renewAt = now + delay;
      this.schedule(name, s, s.renewAt);
    }
  }

  /** One order from the fleet's hourly budget, or OrderCeiling. */
  private async takeOrderSlot(): Promise<void> {
    if (this.o.ordersPerHour <= 0 || !this.o.orderLimiter) return;
    try {
      await this.o.orderLimiter.consume('orders');
    } catch (e) {
      if (e instanceof RateLimiterRes) throw new OrderCeiling(this.o.ordersPerHour, e.msBeforeNext);
      throw e;
    }
  }

  private async waitForStored(name: string, usable: (c: StoredCertificate | undefined) => c is StoredCertificate): Promise<void> {
    const deadline = Date.now() + 5 * 60_000;
    while (Date.now() < deadline && !this.stopped) {
      const c = await this.store.getCertificate(name).catch(() => undefined);
      if (usable(c)) return this.install(c);
      await new Promise((r) => setTimeout(r, 500).unref());
    }
    throw new Error('the relay holding the order lock did not store a certificate in time');
  }

  private install(c: StoredCertificate): void {
    const cur = this.served.get(c.name);
    if (cur && cur.notAfter >= c.notAfter) return;
    let ctx: SecureContext;
    let fingerprint: string;
    try {
      ctx = createSecureContext({ key: c.keyPem, cert: c.certPem });
      fingerprint = new X509Certificate(c.certPem).fingerprint256;
    } catch (e) {
      this.log.warn({ event: 'acme-bad-record', name: c.name, err: (e as Error).message }, 'stored certificate does not load; ignored');
      return;
    }
    if (cur?.timer) clearTimeout(cur.timer);
    const lifetime = c.notAfter - c.notBefore;
    const renewAt = renewalPoint(c) - Math.random() * lifetime * 0.05;
    const s: Served = { ctx, renewAt, notBefore: c.notBefore, notAfter: c.notAfter, fingerprint, timer: null };
    this.served.set(c.name, s);
    this.schedule(c.name, s, renewAt);
    this.log.info({ event: 'certificate-loaded', name: c.name, fingerprint, notAfter: new Date(c.notAfter).toISOString(), orderedBy: c.orderedBy }, 'certificate ready for SNI');
  }

  private schedule(name: string, s: Served, at: number): void {
    if (s.timer) clearTimeout(s.timer);
    // setTimeout holds at most ~24.8 days: wake daily and look again.
    const delay = Math.min(Math.max(0, at - Date.now()), 86_400_000);
    s.timer = setTimeout(() => {
      s.timer = null;
      if (this.stopped || this.served.get(name) !== s) return;
      if (Date.now() < at) return this.schedule(name, s, at);
      if (!this.stillRouted(name)) {
        this.log.info({ event: 'acme-not-renewed', name }, 'certificate not renewed: the hostname is no longer routed');
        return;
      }
      void this.ensure(name, 'renewal');
    }, delay);
    s.timer.unref();
  }

  private async loadAll(): Promise<void> {
    try {
      for (const c of await this.store.listCertificates()) this.install(c);
    } catch (e) {
      this.log.warn({ event: 'acme-store-read-failed', err: (e as Error).message }, 'cannot read certificates from the store');
    }
  }

  private onStoreEvent(e: AcmeStoreEvent): void {
    if (e.kind === 'challenge') return this.add(e.record);
    void this.store
      .getCertificate(e.name)
      .then((c) => c && this.install(c))
      .catch(() => {});
  }
}

/** Two-thirds of the way through a certificate's life. */
function renewalPoint(c: { notBefore: number; notAfter: number }): number {
  return c.notBefore + ((c.notAfter - c.notBefore) * 2) / 3;
}

function validName(name: string): boolean {
  try {
    checkedName(name);
    return true;
  } catch {
    return false;
  }
}

const CHALLENGE_PATH = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]{1,256})$/;

/**
 * The public HTTP listener's request handler, answering HTTP-01 validations
 * for tokens this fleet is being validated on; every other request (and a
 * token it does not know: an origin may run its own ACME client) goes to `next`.
 */
export function answeringHttp01<Q extends { url?: string }, S extends { writeHead(status: number, headers: Record<string, string>): unknown; end(body: string): unknown }>(
  certs: CertificateManager,
  next: (req: Q, res: S) => void,
): (req: Q, res: S) => void {
  return (req, res) => {
    const m = CHALLENGE_PATH.exec(req.url ?? '');
    if (!m) return next(req, res);
    void certs.http01Answer(m[1]!).then((ka) => {
      if (ka === undefined) return next(req, res);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(ka);
    });
  };
}
