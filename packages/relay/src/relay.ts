// Over 500 lines: the one place the relay's parts (edge/, connectors/, fleet/, control/, access/, quick/) are composed, started, drained and stopped in order.
import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { ConnectorEndpoint } from './connectors/connector-endpoint.js';
import { TunnelConnections } from './connectors/tunnel-connections.js';
import { RouteTable } from './edge/route-table.js';
import { RequestProxy } from './edge/request-proxy.js';
import { LocalDispatch } from './edge/local-dispatch.js';
import { ErrorAnswers } from './edge/error-page.js';
import type { ProxyHooks } from './edge/exchange.js';
import { listen, closeServer, type ListenAddress } from './edge/listen.js';
import type { Store, StoreEvent } from './store/types.js';
import type { FleetKeys } from './control/keys.js';
import { FleetView } from './fleet/fleet-view.js';
import { PeerAuth, PeerHeaders } from './fleet/peer-auth.js';
import { PeerDispatch } from './fleet/peer-dispatch.js';
import { createPeerServer } from './fleet/peer-endpoint.js';
import { PeerEndpointDrain } from './fleet/peer-drain.js';
import { FreshConnections } from './edge/fresh-connections.js';
import type { RelayMetrics } from './metrics.js';
import { logRequestWhenDone } from './edge/request-log.js';
import { RelayCertificate, checkPlainListeners, type ReloadTrigger, type TlsFiles } from './edge/listener-tls.js';
import { DEFAULT_CREDENTIAL_POLICY, type CredentialPolicy } from './connectors/credential-check.js';
import { defaultLimits, NO_LIMIT_HITS, type RelayLimits } from './relay-limits.js';
import { PublicConnectionGate } from './edge/public-connection-gate.js';
import { watchBodyIdle } from './edge/body-idle-timeout.js';
import { Access, type AccessOptions } from './access/access.js';
import { routesOutsideZones } from './zones/zone-grants.js';
import { createPublicHttpsServer, type PublicHttpsServer } from './edge/public-https-server.js';
import { RelayDescriptionDocument } from './relay-description.js';
import { QuickTunnels, type QuickSettings } from './quick/quick-tunnels.js';
import { QuickGate } from './quick/quick-gate.js';
import { registerQuickMetrics } from './quick/quick-metrics.js';
import { fleetRateLimiter, sharedRedisOf } from './rate-limiter.js';
import { AcmeIssuer, type AcmeSettings } from './tls/acme-issuer.js';
import type { AcmeStore } from './tls/acme-store.js';
import { answeringHttp01, CertificateManager, type CertificateManagerOptions } from './tls/certificate-manager.js';

export interface RelayOptions {
  id: string;
  region: string;
  listen: {
    http?: ListenAddress;
    https?: ListenAddress;
    connect: ListenAddress;
    control?: ListenAddress;
    /** Relay-to-relay forwarding endpoint; without it this relay neither forwards nor is forwarded to. */
    peer?: ListenAddress;
    /** Prometheus `/metrics` listener. */
    metrics?: ListenAddress;
  };
  /**
   * cert/key for every listener but the plain public `http` one and metrics:
   * HTTPS, wss:// connector endpoint, control API and peer endpoint.
   */
  tls?: TlsFiles;
  /** Without `tls`: serve connect/control/peer in plain HTTP on non-loopback addresses anyway. */
  insecureHttpControl?: boolean;
  /** URLs other nodes and connectors should use to reach this relay; derived from the bound ports when unset. */
  advertise?: { host?: string; connectUrl?: string; controlUrl?: string; publicUrl?: string; peerUrl?: string };
  /** How long a drain waits for in-flight requests. */
  drainTimeoutMs: number;
  /**
   * On SIGTERM, keep serving this long after announcing `draining` (health
   * 503, fleet membership) so load balancers stop sending before listeners close.
   */
  drainDelayMs?: number;
  heartbeatMs?: number;
  /** Ceilings against clients and connectors (defaults: defaultLimits()). */
  limits?: RelayLimits;
  /** Access key rotation and assertion lifetime (defaults: a day per key, 300 s). */
  access?: Omit<AccessOptions, 'maxPendingLogins'>;
  /** Anonymous quick tunnels under this zone (`--quick-zone`); off when unset. */
  quick?: QuickSettings;
}

export interface RelayDeps {
  store: Store;
  keys: FleetKeys;
  log: Logger;
  hooks?: ProxyHooks;
  /** Wire bytes, connection events and gauges (the caller also passes `metrics.hooks` as `hooks`). */
  metrics?: RelayMetrics;
  /** Credential lifetimes and the legacy (no `exp`) policy. */
  policy?: CredentialPolicy;
  /** Certificates per hostname from an ACME CA (the static certificate is then the fallback). */
  acme?: { store: AcmeStore; settings: AcmeSettings; options: Omit<CertificateManagerOptions, 'routeOf' | 'wildcards' | 'orderLimiter'> };
}

export interface BoundPorts {
  http?: number;
  https?: number;
  connect: number;
  control?: number;
  peer?: number;
  metrics?: number;
}

type RelayState = 'created' | 'running' | 'draining' | 'stopped';

export class Relay {
  readonly connections = new TunnelConnections();
  readonly routes: RouteTable;
  private state: RelayState = 'created';
  private readonly servers: { public: Array<http.Server | https.Server | PublicHttpsServer['server']>; connect?: http.Server | https.Server; control?: http.Server | https.Server; peer?: http.Server | https.Server; metrics?: http.Server } = { public: [] };
  /** Set when certificates are configured: every listener but plain public HTTP and metrics uses it. */
  readonly certificate: RelayCertificate | null;
  /** Set when the relay has a peer endpoint: it forwards, and is forwarded to. */
  private readonly fleet: FleetView | null;
  private readonly peers: PeerDispatch | null;
  /** The peer endpoint's requests and connections, which a drain waits for. */
  private peerDrain: PeerEndpointDrain | null = null;
  private readonly local: LocalDispatch;
  private readonly requests: RequestProxy;
  private presenceTimer: NodeJS.Timeout | null = null;
  private endpoint!: ConnectorEndpoint;
  private heartbeat: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  /** The connection set changed since the store last took it in full (nothing written yet at start). */
  private presenceDirty = true;
  ports!: BoundPorts;
  readonly startedAt = Date.now();
  /** Signs and checks relay-to-relay requests (forwarding and the dashboard's stats calls). */
  readonly peerAuth: PeerAuth;
  readonly limits: RelayLimits;
  private readonly gate: PublicConnectionGate;
  /** Access policies, assertions and logins (DESIGN §14). */
  readonly access: Access;
  /** The public HTTPS listener (HTTP/2 and HTTP/1.1), when there is one. */
  private https: PublicHttpsServer | null = null;
  /** `/.well-known/tunnel-relay` on every listener: one relay URL is enough for every command. */
  readonly description: RelayDescriptionDocument;
  /** Quick tunnels, when `opts.quick` turns them on. */
  readonly quick: QuickTunnels | null;
  private quickGate: QuickGate | null = null;
  /** ACME certificates by SNI, when configured. */
  certificates: CertificateManager | null = null;

  constructor(
    readonly opts: RelayOptions,
    readonly deps: RelayDeps,
  ) {
    this.peerAuth = new PeerAuth(deps.keys.secretKey, { claim: (key, ttlMs) => deps.store.claimNonce(key, ttlMs) });
    this.routes = new RouteTable(deps.store);
    if (!opts.tls) checkPlainListeners({ connect: opts.listen.connect, control: opts.listen.control, peer: opts.listen.peer }, !!opts.insecureHttpControl);
    this.certificate = opts.tls ? new RelayCertificate(opts.tls, deps.log) : null;
    const hooks = deps.hooks ?? {};
    const errors = new ErrorAnswers(deps.log, hooks);
    this.local = new LocalDispatch(this.connections, deps.log, hooks, errors);
    if (opts.listen.peer) {
      // With certificates, requests are forwarded only to https:// peers, verified with the fleet's CA.
      this.fleet = new FleetView(deps.store, opts.id, deps.log, undefined, this.certificate ? 'https' : 'any', this.memberTtlMs());
      this.peers = new PeerDispatch({
        selfId: opts.id,
        auth: this.peerAuth,
        fleet: this.fleet,
        log: deps.log,
        local: this.local,
        onForward: hooks.onForward,
        ca: this.certificate?.peerCa(),
      });
      // A peer that drains or leaves gets no new requests: its idle connections close from this side.
      const peers = this.peers;
      this.fleet.onRetired((m) => peers.retire(m.peerUrl));
    } else {
      this.fleet = null;
      this.peers = null;
    }
    this.limits = opts.limits ?? defaultLimits();
    this.gate = new PublicConnectionGate(this.limits, deps.metrics ?? NO_LIMIT_HITS);
    const metrics = deps.metrics;
    this.access = new Access(deps.store, deps.keys, deps.log, { maxPendingLogins: this.limits.accessPendingLogins, ...opts.access }, {
      onOutcome: (o) => metrics?.accessOutcome(o),
      hits: metrics ?? NO_LIMIT_HITS,
    });
    this.requests = new RequestProxy(this.routes, this.peers ? [this.local, this.peers] : [this.local], errors, this.access.gate);
    this.description = new RelayDescriptionDocument(opts.id, opts.region, deps.keys, () => this.urls());
    this.quick = opts.quick
      ? new QuickTunnels(opts.quick, {
          store: deps.store,
          keys: deps.keys,
          log: deps.log,
          policy: deps.policy ?? DEFAULT_CREDENTIAL_POLICY,
          limits: this.limits,
          hits: deps.metrics ?? NO_LIMIT_HITS,
          publicUrl: () => this.urls().publicUrl,
          controlUrl: () => this.urls().controlUrl,
          heldHere: (tunnelId) => this.connections.forTunnel(tunnelId).length > 0,
          redis: sharedRedisOf(deps.store),
        })
      : null;
  }

  get id(): string {
    return this.opts.id;
  }
  get draining(): boolean {
    return this.state === 'draining';
  }

  async start(): Promise<BoundPorts> {
    if (this.state !== 'created') throw new Error('relay already started');
    const { log, store } = this.deps;
    await this.routes.load();
    if (this.deps.acme) {
      const { store: acmeStore, settings, options } = this.deps.acme;
      const acmeLog = log.child({ component: 'acme' });
      const board = { add: (r: Parameters<CertificateManager['add']>[0]) => this.certificates?.add(r), remove: (r: Parameters<CertificateManager['remove']>[0]) => this.certificates?.remove(r) };
      const routing = {
        routeOf: (n: string) => this.routes.lookup(n)?.hostname,
        wildcards: settings.dnsHook !== undefined,
        orderLimiter: fleetRateLimiter({ points: options.ordersPerHour, durationS: 3_600, keyPrefix: 'acme-orders:', redis: sharedRedisOf(store) }),
      };
      this.certificates = new CertificateManager(new AcmeIssuer(settings, acmeStore, board, this.opts.id, acmeLog), acmeStore, { ...options, ...routing }, acmeLog);
      await this.certificates.start();
      this.deps.metrics?.attachAcme(this.certificates);
    }
    await this.access.load();
    await this.warnRoutesOutsideZones();
    if (this.quick) {
      await this.quick.start();
      const quick = this.quick;
      const gate = (this.quickGate = new QuickGate({ routes: this.routes, isQuick: (a) => quick.isQuick(a), limits: this.limits, hits: this.deps.metrics ?? NO_LIMIT_HITS, log, banner: this.opts.quick?.banner, redis: sharedRedisOf(store) }));
      if (this.deps.metrics) registerQuickMetrics(this.deps.metrics.registry, { inFlight: () => gate.inFlightTotal, storeCounts: () => quick.storeCounts() }, log);
    }
    const metrics = this.deps.metrics;
    metrics?.attachConnections(this.connections, () => this.publicInFlight());
    if (this.certificate) metrics?.attachCertificate(this.certificate);
    metrics?.attachLimitGauges({ publicConnections: () => this.gate.open, accessPendingLogins: () => this.access.gate.loginsPending });
    const hits = metrics ?? NO_LIMIT_HITS;
    const limits = this.limits;
    // Connection events carry the relay id (connector id and index come from the connection).
    this.endpoint = new ConnectorEndpoint({
      relayId: this.opts.id,
      region: this.opts.region,
      publicKey: this.deps.keys.publicKey,
      store,
      connections: this.connections,
      log: log.child({ relayId: this.opts.id }),
      policy: this.deps.policy ?? DEFAULT_CREDENTIAL_POLICY,
      isDraining: () => this.state !== 'running',
      limits,
      hits,
    });
    metrics?.attachLimitGauges({ pendingRegistrations: () => this.endpoint.registrations.inProgress });

    const cert = this.certificate;
    const serverOpts: http.ServerOptions = {
      // No fixed request deadline: long uploads and long polls are legitimate.
      requestTimeout: 0,
      headersTimeout: limits.headersTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // node checks head deadlines on this period (30 s by default): a short
      // headers timeout needs a shorter period to mean anything.
      connectionsCheckingInterval: Math.min(30_000, Math.max(250, limits.headersTimeoutMs / 4 || 30_000)),
      maxHeaderSize: 64 * 1024,
    };
    // One debug line per request with its Tunnel-Request-Id (nothing is attached otherwise).
    const logRequests = log.isLevelEnabled('debug');
    const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
      // Refused by the gate; its answer is already written.
      if (this.gate.isRefused(req.socket)) return;
      this.fresh?.begun(req.socket);
      // Past the drain's delay every HTTP/1 answer closes its connection, rather than be cut when the drain ends.
      if (this.publicClosing && req.httpVersionMajor < 2) res.shouldKeepAlive = false;
      // The relay's own name answers its description; a routed hostname keeps the path for its origin.
      if (RelayDescriptionDocument.asks(req) && !this.routes.lookup(req.headers.host ?? '')) return void this.description.serve('public', req, res);
      this.trackPublic(res);
      let requestId: string | undefined;
      const dispatch = (): boolean => {
        try {
          requestId = this.requests.handleRequest(req, res);
          return true;
        } catch (e) {
          // Last resort for this one request: the process and every other request carry on.
          log.error({ err: (e as Error).message, stack: (e as Error).stack, host: req.headers.host }, 'request handler failed: request ended');
          res.destroy();
          return false;
        }
      };
      if (limits.bodyIdleTimeoutMs > 0 && hasRequestBody(req)) watchBodyIdle(req, res, limits.bodyIdleTimeoutMs, hits, log, () => requestId);
      // A quick tunnel's request is dispatched once its limits admit it.
      const serve = () => {
        if (dispatch() && logRequests) logRequestWhenDone(log, req, res, 'public', requestId);
      };
      if (!this.quickGate?.request(req, res, serve)) serve();
    };
    const countBytes = (s: import('node:net').Server, side: 'public' | 'connector') => {
      if (metrics) s.on('connection', (sock: import('node:net').Socket) => metrics.trackSocket(side, sock));
    };
    const refuseUnparsable = (e: Error & { code?: string }, sock: Duplex) => refuseClientBytes(log, e, sock);
    const onUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      if (this.gate.isRefused(req.socket)) return void socket.destroy();
      this.fresh?.begun(req.socket);
      const dispatch = () => {
        try {
          this.requests.handleUpgrade(req, socket, head);
        } catch (e) {
          log.error({ err: (e as Error).message, stack: (e as Error).stack, host: req.headers.host }, 'upgrade handler failed: connection ended');
          socket.destroy();
        }
      };
      if (!this.quickGate?.upgrade(req, socket, dispatch)) dispatch();
    };
    const ports: BoundPorts = { connect: 0 };

    if (this.opts.listen.http) {
      const s = http.createServer(serverOpts, this.certificates ? answeringHttp01(this.certificates, onRequest) : onRequest);
      s.on('connection', (sock: import('node:net').Socket) => this.gate.admit(sock, true));
      this.fresh = new FreshConnections(s);
      s.on('upgrade', onUpgrade);
      s.on('clientError', refuseUnparsable);
      countBytes(s, 'public');
      this.servers.public.push(s);
      ports.http = await listen(s, this.opts.listen.http);
    }
    if (this.opts.listen.https) {
      if (!cert && !this.certificates) throw new Error('listen.https needs tls.cert and tls.key (or ACME)');
      // ACME without a static certificate: unknown names get a self-signed one (and the 404 page).
      // @peculiar/x509 loads only then, like acme-client: most relays never need it.
      const fallback = cert ? cert.pem : await (await import('./tls/self-signed-fallback.js')).selfSignedFallback();
      if (!cert) log.info({ event: 'tls-fallback-self-signed' }, 'no --tls-cert: names without an ACME certificate get a self-signed one');
      // HTTP/2 (ALPN h2) and HTTP/1.1 on one port, into the same request handler.
      const h2 = createPublicHttpsServer({
        certificates: this.certificates ? { ...fallback, sni: this.certificates.sniCallback, alpn: this.certificates.alpnCallback } : fallback,
        limits,
        http1: serverOpts,
        hits,
        log,
        onRequest: onRequest as (req: unknown, res: unknown) => void,
      });
      this.https = h2;
      metrics?.attachH2(h2.open, h2.refused);
      const s = cert ? cert.adopt(h2.server) : h2.server;
      // TLS: the raw socket cannot carry a plain answer; over a ceiling it is closed.
      s.on('connection', (sock: import('node:net').Socket) => this.gate.admit(sock, false));
      s.on('upgrade', onUpgrade);
      s.on('clientError', refuseUnparsable);
      countBytes(s, 'public');
      this.servers.public.push(s);
      ports.https = await listen(s, this.opts.listen.https);
    }

    const connect = this.createServer({});
    connect.on('request', (req, res) => {
      if (RelayDescriptionDocument.asks(req)) return void this.description.serve('connect', req, res);
      res.writeHead(426, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'upgrade_required', message: 'connectors connect with a WebSocket upgrade to /v1/connect' } }));
    });
    connect.on('upgrade', (req, socket, head) => void this.endpoint.onUpgrade(req, socket, head));
    countBytes(connect, 'connector');
    this.servers.connect = connect;
    ports.connect = await listen(connect, this.opts.listen.connect);
    if (this.opts.listen.peer && this.fleet) {
      await this.fleet.start();
      const peer = createPeerServer({
        routes: this.routes,
        local: this.local,
        auth: this.peerAuth,
        log,
        hooks: this.deps.hooks ?? {},
        createServer: (o, h) => this.createServer(o, h),
      });
      if (logRequests) {
        peer.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
          const id = req.headers[PeerHeaders.requestId];
          logRequestWhenDone(log, req, res, 'peer', typeof id === 'string' ? id : undefined);
        });
      }
      this.servers.peer = peer;
      this.peerDrain = new PeerEndpointDrain(peer);
      ports.peer = await listen(peer, this.opts.listen.peer);
    }
    this.ports = ports;

    this.unsubscribe = store.subscribe((e) => this.onStoreEvent(e));
    this.connections.onChange(() => {
      // Peers learn where the tunnel's connections are within ~100 ms.
      this.presenceDirty = true;
      if (this.presenceTimer) return;
      this.presenceTimer = setTimeout(() => {
        this.presenceTimer = null;
        if (this.presenceDirty && this.state !== 'stopped') void this.publishMembership();
      }, 100);
      this.presenceTimer.unref();
    });
    cert?.watch();
    this.state = 'running';
    await this.publishMembership();
    const every = this.opts.heartbeatMs ?? 2_000;
    this.heartbeat = setInterval(() => {
      void this.publishMembership();
      void this.endLapsedCredentials();
    }, every);
    this.heartbeat.unref();
    log.info({ event: 'listening', relayId: this.opts.id, region: this.opts.region, ports }, 'relay listening');
    return ports;
  }

  /** An HTTPS server on the relay's (reloadable) certificate when it has one, else plain HTTP. */
  createServer(opts: http.ServerOptions, handler?: http.RequestListener): http.Server | https.Server {
    return this.certificate ? this.certificate.createServer(opts, handler) : http.createServer(opts, handler);
  }

  /** SIGHUP: re-read the certificate files (they are also watched). */
  reloadCertificate(trigger: ReloadTrigger): boolean {
    return this.certificate?.reload(trigger) ?? false;
  }

  /** Attach the control API (the caller owns its routes); served over TLS when the relay has certificates. */
  async attachControl(handler: http.RequestListener): Promise<number> {
    const server = this.createServer({}, (req, res) => (RelayDescriptionDocument.asks(req) ? this.description.serve('control', req, res) : void handler(req, res)));
    this.servers.control = server;
    const port = await listen(server, this.opts.listen.control!);
    this.ports.control = port;
    await this.publishMembership();
    return port;
  }

  /** Attach the Prometheus listener (built by the caller); it stays up while draining. */
  async attachMetrics(server: http.Server): Promise<number> {
    this.servers.metrics = server;
    const port = await listen(server, this.opts.listen.metrics!);
    this.ports.metrics = port;
    return port;
  }

  urls(): { connectUrl: string; controlUrl: string; publicUrl: string } {
    const host = this.opts.advertise?.host ?? '127.0.0.1';
    const tls = !!this.opts.tls;
    return {
      connectUrl: this.opts.advertise?.connectUrl ?? `${tls ? 'wss' : 'ws'}://${host}:${this.ports.connect}`,
      controlUrl: this.opts.advertise?.controlUrl ?? (this.ports.control ? `${tls ? 'https' : 'http'}://${host}:${this.ports.control}` : ''),
      publicUrl:
        this.opts.advertise?.publicUrl ??
        (this.ports.http ? `http://${host}:${this.ports.http}` : this.ports.https ? `https://${host}:${this.ports.https}` : ''),
    };
  }

  /** How long a relay stays a member after its last heartbeat: three heartbeats, so one lost write is not a departure. */
  private memberTtlMs(): number {
    return (this.opts.heartbeatMs ?? 2_000) * 3;
  }

  /** The write in flight, and whether another was asked for meanwhile. */
  private publishing: Promise<void> | null = null;
  private publishAgain = false;

  /**
   * One write at a time: two overlapping writes (the 100 ms change timer and
   * the heartbeat) can land in the store in the other order, leaving an older
   * connection set in place; and since an unchanged set is only refreshed,
   * nothing would ever correct it. A call during a write runs once more after it.
   */
  private publishMembership(): Promise<void> {
    if (this.publishing) {
      this.publishAgain = true;
      return this.publishing;
    }
    const run = async (): Promise<void> => {
      try {
        do {
          this.publishAgain = false;
          await this.publishMembershipOnce();
        } while (this.publishAgain && this.state !== 'stopped');
      } finally {
        this.publishing = null;
      }
    };
    this.publishing = run();
    return this.publishing;
  }

  private async publishMembershipOnce(): Promise<void> {
    const { store, log } = this.deps;
    const ttl = this.memberTtlMs();
    try {
      await store.heartbeatRelay(
        {
          id: this.opts.id,
          region: this.opts.region,
          ...this.urls(),
          peerUrl: this.ports.peer ? (this.opts.advertise?.peerUrl ?? `${this.certificate ? 'https' : 'http'}://${this.opts.advertise?.host ?? '127.0.0.1'}:${this.ports.peer}`) : '',
          startedAt: this.startedAt,
          lastSeen: Date.now(),
          draining: this.state !== 'running',
        },
        ttl,
      );
      // Unchanged since the last full write: extend its TTL only (a heartbeat costs O(1), not a
      // rewrite of every connection); a set the store lost is written again in full.
      if (!this.presenceDirty && (await store.refreshPresence(this.opts.id, ttl))) return;
      this.presenceDirty = false;
      await store.putPresence(
        this.opts.id,
        this.connections.list().map((c) => ({
          connectionId: c.id.connectionId,
          relayId: this.opts.id,
          tunnelId: c.id.tunnelId,
          connectorId: c.id.connectorId,
          connIndex: c.id.connIndex,
          version: c.id.version,
          clientIp: c.id.clientIp,
          connectedAt: c.connectedAt,
          ...(c.id.host ? { host: c.id.host } : {}),
        })),
        ttl,
      );
    } catch (e) {
      // The store may not hold the set we meant to write: write it in full next time.
      this.presenceDirty = true;
      log.warn({ err: (e as Error).message }, 'store heartbeat failed');
    }
  }

  /**
   * A store from before zones has routes no zone holds. They keep serving
   * (a running install must not break on upgrade), but the operator is told
   * how to migrate: until then, any account may route next to them.
   */
  private async warnRoutesOutsideZones(): Promise<void> {
    try {
      const outside = routesOutsideZones(await this.deps.store.listRoutes(), await this.deps.store.listZones());
      if (outside.length === 0) return;
      this.deps.log.warn(
        { event: 'routes-outside-zones', count: outside.length, hostnames: outside.slice(0, 20).map((r) => r.hostname) },
        `${outside.length} route(s) are not inside a zone their account holds; they keep serving, but run \`tunnel-relay zone adopt\` once to grant the zones they imply`,
      );
    } catch (e) {
      this.deps.log.warn({ err: (e as Error).message }, 'cannot check routes against zones');
    }
  }

  private lastWipeWarning = 0;

  private onStoreEvent(e: StoreEvent): void {
    if (e.type === 'tunnel-vanished') {
      // Gone without a tombstone: the store lost data, the tunnel was not
      // deleted. Its connectors are told to retry (never to exit), and
      // reconnect by themselves once the data is back.
      const now = Date.now();
      if (now - this.lastWipeWarning > 5_000) {
        this.lastWipeWarning = now;
        this.deps.log.warn(
          { event: 'store-wiped', tunnelId: e.tunnelId },
          'store looks empty or wiped: tunnels vanished without a tombstone; their connectors keep retrying until the data is restored',
        );
      }
      for (const c of this.connections.forTunnel(e.tunnelId)) c.terminate('tunnel_unknown', `the relay's store no longer knows tunnel ${e.tunnelId}; retrying`);
    } else if (e.type === 'tunnel') {
      void this.dropDisconnected(e.tunnelId);
    } else if (e.type === 'tunnel-deleted') {
      this.deps.metrics?.forgetTunnel(e.tunnelId);
      for (const c of this.connections.forTunnel(e.tunnelId)) c.terminate('tunnel_deleted', `tunnel ${e.tunnelId} was deleted`);
    } else if (e.type === 'revoked') {
      // A rotation's revocation takes effect after its grace period: the
      // heartbeat sweep ends those connections then.
      void this.deps.store.isRevoked(e.tokenId).then((now) => {
        if (!now) return;
        for (const c of this.connections.list()) {
          if (c.id.tokenId === e.tokenId) c.terminate('credential_revoked', 'tunnel credential was revoked');
        }
      });
    }
  }

  /**
   * An operator disconnected the tunnel (dashboard, `tunnel-relay tunnel
   * disconnect`): its connections made before that end with a retryable
   * error, so the connectors dial again; the ones they make after it stay.
   */
  private async dropDisconnected(tunnelId: string): Promise<void> {
    const at = (await this.deps.store.getTunnel(tunnelId).catch(() => undefined))?.disconnectedAt;
    if (at === undefined) return;
    const stale = this.connections.forTunnel(tunnelId).filter((c) => c.connectedAt <= at);
    if (stale.length === 0) return;
    this.deps.log.info({ event: 'tunnel-disconnected', tunnelId, connections: stale.length }, 'an operator disconnected this tunnel: its connections end and the connectors reconnect');
    for (const c of stale) c.terminate('tunnel_disconnected', 'an operator disconnected this tunnel: reconnect');
  }

  /**
   * Connections whose credential has since expired, or whose revocation
   * (after a rotation's grace period) has come into effect, are ended: a
   * connector that rotated has already moved to its new credential.
   */
  private async endLapsedCredentials(): Promise<void> {
    const now = Date.now();
    for (const c of this.connections.list()) {
      if (c.id.tokenExpiresAt !== undefined && c.id.tokenExpiresAt <= now) {
        c.terminate('credential_expired', 'tunnel credential has expired');
      } else if (await this.deps.store.isRevoked(c.id.tokenId).catch(() => false)) {
        c.terminate('credential_revoked', 'tunnel credential was revoked');
      }
    }
  }

  /**
   * SIGTERM: stop taking public connections, GoAway every connector session
   * (connectors move to other relays), let in-flight requests finish within
   * the drain timeout, then stop.
   */
  async drain(): Promise<void> {
    if (this.state !== 'running') return;
    this.state = 'draining';
    const { log } = this.deps;
    const started = Date.now();
    log.info({ event: 'draining', relayId: this.opts.id, connections: this.connections.size }, 'relay draining');
    this.peerDrain?.begin();
    await this.publishMembership();
    // Connectors move first (GoAway); requests arriving meanwhile are
    // forwarded to the relays they moved to.
    for (const c of this.connections.list()) c.drain();
    const delay = this.opts.drainDelayMs ?? 0;
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    this.publicClosing = true;
    for (const res of this.publicAnswers) if (!res.headersSent && res instanceof http.ServerResponse) res.shouldKeepAlive = false;
    const fresh = this.fresh;
    const publicClosed = Promise.all(this.servers.public.map((s) => closeServer(s)));
    for (const s of this.servers.public) (s as http.Server).closeIdleConnections?.();
    // A client that connected just before the listener closed gets its request served (see FreshConnections), for a short grace.
    const freshUntil = Date.now() + FRESH_CONNECTION_GRACE_MS;
    this.https?.closeIdleConnections();
    // In-flight requests finish (public ones, peer-forwarded ones and
    // connector streams each say so when they end), or the drain timeout ends the wait.
    const deadline = started + this.opts.drainTimeoutMs;
    const peer = this.peerDrain;
    await new Promise<void>((resolve) => {
      const conns = this.connections.list();
      const done = () => {
        clearTimeout(t);
        clearTimeout(freshOver);
        this.onPublicSettled = null;
        peer?.onChange(null);
        fresh?.onChange(null);
        for (const c of conns) {
          c.off('idle', check);
          c.off('closed', check);
        }
        resolve();
      };
      let waitingFor = '';
      const check = () => {
        const streams = this.connections.list().reduce((n, c) => n + c.inflight, 0);
        const pending = { streams, public: this.publicInFlight(), peer: peer?.inFlight ?? 0, fresh: fresh && Date.now() < freshUntil ? fresh.count : 0 };
        if (pending.streams === 0 && pending.public === 0 && pending.peer === 0 && pending.fresh === 0) return done();
        // Once per change: what the drain still waits for, so a slow drain names its cause.
        const now = JSON.stringify(pending);
        if (now !== waitingFor) log.info({ event: 'drain-waiting', relayId: this.opts.id, ...pending }, 'drain waiting for requests in flight');
        waitingFor = now;
      };
      const t = setTimeout(done, Math.max(0, deadline - Date.now()));
      const freshOver = setTimeout(() => check(), Math.max(0, freshUntil - Date.now()));
      fresh?.onChange(check);
      for (const c of conns) {
        c.on('idle', check);
        c.on('closed', check);
      }
      this.onPublicSettled = check;
      peer?.onChange(check);
      check();
    });
    if (peer) await this.lingerForPeers(peer, Math.min(deadline, Date.now() + this.memberTtlMs()));
    for (const s of this.servers.public) (s as http.Server).closeAllConnections?.();
    this.https?.closeAllConnections();
    await publicClosed;
    // /metrics closes with the relay: the streams the deadline cut (`goaway`) are seen only here.
    log.info({ event: 'drained', relayId: this.opts.id, ms: Date.now() - started, ...(this.https ? { h2RefusedStreams: { ...this.https.refused } } : {}) }, 'relay drained');
    await this.stop();
  }

  /**
   * Peers close their pooled connections here once they learn of the drain
   * (at once on the store's event, or at their next fleet refresh); closing
   * an idle one from this side could cut a request a lagging peer is
   * writing on it. Bounded by a membership TTL, within the drain timeout.
   */
  private async lingerForPeers(peer: PeerEndpointDrain, until: number): Promise<void> {
    if (peer.connections === 0) return;
    const { log } = this.deps;
    log.info({ event: 'drain-peers', relayId: this.opts.id, connections: peer.connections }, 'waiting for peer relays to close their connections');
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        peer.onChange(null);
        resolve();
      };
      const t = setTimeout(done, Math.max(0, until - Date.now()));
      peer.onChange(() => {
        if (peer.connections === 0) done();
      });
    });
    if (peer.connections > 0) log.warn({ event: 'drain-peers-left', relayId: this.opts.id, connections: peer.connections }, 'peer relays kept connections open past the drain; closing them');
  }

  /** Public requests accepted and not yet finished (forwarded ones included). */
  private readonly publicAnswers = new Set<http.ServerResponse>();
  publicInFlight(): number {
    return this.publicAnswers.size;
  }
  /** Set once a drain has closed the public listeners. */
  private publicClosing = false;
  /** The plain-HTTP public listener's connections that have not begun a request. */
  private fresh: FreshConnections | null = null;
  /** Set while a drain waits: told when the last public request finishes. */
  private onPublicSettled: (() => void) | null = null;
  private trackPublic(res: http.ServerResponse): void {
    this.publicAnswers.add(res);
    res.once('close', () => {
      this.publicAnswers.delete(res);
      if (this.publicAnswers.size === 0) this.onPublicSettled?.();
    });
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.presenceTimer) clearTimeout(this.presenceTimer);
    this.quick?.stop();
    this.fleet?.stop();
    this.certificate?.close();
    await this.peers?.close();
    this.unsubscribe?.();
    this.routes.close();
    this.access.close();
    this.certificates?.stop();
    await this.deps.acme?.store.close();
    for (const c of this.connections.list()) c.close();
    for (const s of this.servers.public) (s as http.Server).closeAllConnections?.();
    this.https?.closeAllConnections();
    this.endpoint?.close();
    const all = [...this.servers.public, this.servers.connect, this.servers.control, this.servers.peer, this.servers.metrics].filter((s): s is http.Server => !!s);
    for (const s of all) s.closeAllConnections?.();
    await Promise.all(all.map((s) => closeServer(s)));
    try {
      await this.deps.store.removeRelay(this.opts.id);
    } catch {
      /* expiry will remove it */
    }
    await this.deps.store.close();
  }
}

/**
 * How long a drain keeps a connection that was accepted but has sent no
 * request yet: a client sends its request right after connecting, so this
 * only has to cover the moment between; a silent one is closed after it.
 */
const FRESH_CONNECTION_GRACE_MS = 2_000;

/** Bodyless requests (no length, no chunking) have no body to stall. */
function hasRequestBody(req: http.IncomingMessage): boolean {
  const cl = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (cl !== undefined && cl !== '0');
}

/**
 * Bytes node's parser refused (smuggling attempts, bad chars, oversized
 * heads): a plain 400 (431 for a head over the limit, 408 for one that never
 * ended) and the connection is
 * closed, as node does by default, unless a response is already under way on
 * it, in which case it is only closed.
 */
function refuseClientBytes(log: Logger, e: Error & { code?: string }, sock: Duplex): void {
  const busy = (sock as Duplex & { _httpMessage?: unknown })._httpMessage;
  if (e.code === 'ECONNRESET' || !sock.writable || busy) return void sock.destroy();
  log.debug({ event: 'client-error', code: e.code, err: e.message }, 'unparsable request refused');
  const status =
    e.code === 'HPE_HEADER_OVERFLOW'
      ? '431 Request Header Fields Too Large'
      : e.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? '408 Request Timeout' // the headers timeout: a head that never ended
        : '400 Bad Request';
  sock.end(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
  // A client that never closes its side is not waited for.
  setTimeout(() => sock.destroy(), 5_000).unref();
}
