import { randomUUID } from 'node:crypto';
import { unwatchFile, watch, watchFile, type FSWatcher } from 'node:fs';
import type { Logger } from 'pino';
import { HAManager } from './ha/ha-manager.js';
import { OriginProxy, type OriginProxyHooks } from './origin/origin-proxy.js';
import { compileIngress, type Ingress } from './ingress/ingress.js';
import { loadConfig, resolveIngress, ConfigError, ORIGIN_REQUEST_DEFAULTS, type ConnectorConfig } from './ingress/config.js';
import { keysNeedingRestart } from './ingress/config-changes.js';
import type { CloseReason } from './ha/relay-connection.js';
import { RelayDiscovery } from './ha/relay-discovery.js';
import { AssertionCheck } from './access/assertion-check.js';

export const CONNECTOR_VERSION = '0.1.0';

export interface ConnectorOptions {
  token: string;
  relays: string[];
  haConnections: number;
  gracePeriodMs: number;
  /** Config file to watch for ingress changes (reloaded on change and SIGHUP). */
  configFile?: string;
  /** The config the connector started with (read from configFile), to tell which reloaded keys need a restart. */
  config?: ConnectorConfig;
  /** `--url`: a single-service ingress instead of the config's rules. */
  url?: string;
  ingress: Ingress;
  /** Control API URLs to learn the live relay list from (empty: use `relays` as given). */
  controlUrls?: string[];
  /** The control API whose JWKS verifies Access assertions (default: the first of controlUrls). */
  accessControlUrl?: string;
  /** Fleet public key that signs relay lists (from the credential); null turns discovery off. */
  fleetKey?: string | null;
  /** How often to ask for the relay list. */
  discoveryIntervalMs?: number;
  log: Logger;
  hooks?: OriginProxyHooks;
  /** Connector id (default: a new random UUID). */
  id?: string;
}

type ConnectorState = 'created' | 'running' | 'draining' | 'stopped';

/** `tunnel run`: the HA connections plus the origin proxy, with live ingress reloads. */
export class Connector {
  readonly id: string;
  readonly ha: HAManager;
  /** The logger every part of this connector uses: each line carries the connector id. */
  readonly log: Logger;
  readonly proxy: OriginProxy;
  private state: ConnectorState = 'created';
  private watcher: FSWatcher | null = null;
  readonly discovery: RelayDiscovery | null;
  private reloadTimer: NodeJS.Timeout | null = null;
  /** Polling the config file (fs.watch failed); checked this often. */
  private polling = false;
  private running: ConnectorConfig | undefined;
  private fatalReason: Extract<CloseReason, { kind: 'refused' | 'revoked' }> | null = null;
  private readonly fatalWaiters: Array<(r: Extract<CloseReason, { kind: 'refused' | 'revoked' }>) => void> = [];

  constructor(private readonly o: ConnectorOptions) {
    this.id = o.id ?? randomUUID();
    this.running = o.config;
    const log = (this.log = o.log.child({ connectorId: this.id }));
    // Access assertions are checked against the fleet's keys, from the control API the credential names.
    const control = o.accessControlUrl ?? o.controlUrls?.[0];
    this.proxy = new OriginProxy(o.ingress, log, o.hooks, control && o.fleetKey ? new AssertionCheck(control, o.fleetKey) : undefined);
    this.ha = new HAManager({
      relays: o.relays,
      haConnections: o.haConnections,
      token: o.token,
      connectorId: this.id,
      version: CONNECTOR_VERSION,
      log,
      gracePeriodMs: o.gracePeriodMs,
      onStream: (s) => this.proxy.handle(s),
    });
    this.discovery = o.controlUrls?.length
      ? new RelayDiscovery(o.controlUrls, (urls) => this.ha.setRelays(urls), log, {
          fleetKey: o.fleetKey ?? null,
          // Started on wss:// (any of the given relays): never move to ws://.
          secureOnly: o.relays.some((u) => u.startsWith('wss://')),
          everyMs: o.discoveryIntervalMs,
        })
      : null;
    this.ha.on('fatal', (r) => {
      this.fatalReason = r;
      for (const w of this.fatalWaiters.splice(0)) w(r);
    });
  }

  start(): void {
    if (this.state !== 'created') return;
    this.state = 'running';
    this.ha.start();
    this.discovery?.start();
    if (this.o.configFile) this.watchConfig(this.o.configFile);
  }

  /** Resolves when a relay refuses the credential for good (the CLI then exits non-zero). */
  fatal(): Promise<Extract<CloseReason, { kind: 'refused' | 'revoked' }>> {
    if (this.fatalReason) return Promise.resolve(this.fatalReason);
    return new Promise((r) => this.fatalWaiters.push(r));
  }

  /** Re-read the config's ingress; an invalid file is rejected and the running rules stay. */
  reload(): boolean {
    const file = this.o.configFile;
    if (!file) return false;
    try {
      const cfg = loadConfig(file);
      const rules = resolveIngress(cfg, this.o.url);
      const ingress = compileIngress(rules, cfg.originRequest ?? ORIGIN_REQUEST_DEFAULTS);
      this.proxy.setIngress(ingress);
      this.log.info({ event: 'config-reloaded', file, rules: ingress.rules.length }, 'ingress reloaded');
      const ignored = this.running ? keysNeedingRestart(this.running, cfg) : [];
      if (ignored.length) {
        this.log.warn(
          { event: 'config-restart-needed', file, keys: ignored },
          `config changed ${ignored.join(', ')}: a reload applies only ingress and originRequest; restart the connector to apply the rest`,
        );
      }
      // Compared against what runs, so the warning repeats until a restart: only the live part moves.
      this.running = this.running ? { ...this.running, source: cfg.source, ingress: cfg.ingress, originRequest: cfg.originRequest } : cfg;
      return true;
    } catch (e) {
      const msg = e instanceof ConfigError ? e.message : (e as Error).message;
      this.log.error({ event: 'config-rejected', file, err: msg }, 'new config rejected; keeping the running ingress');
      return false;
    }
  }

  private watchConfig(file: string): void {
    const onChange = () => {
      if (this.reloadTimer) clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(() => {
        this.reload();
        if (this.state !== 'running') return;
        // Re-arm: an editor's rename leaves the old watch on a file that is gone.
        this.watcher?.close();
        this.watcher = null;
        this.armWatch(file, onChange);
      }, 150);
      this.reloadTimer.unref();
    };
    this.armWatch(file, onChange);
  }

  /**
   * fs.watch on the file; when it cannot be set up or fails later (file
   * deleted, inotify limit), poll the file's stat instead so a change is still
   * picked up, and go back to fs.watch once it works again.
   */
  private armWatch(file: string, onChange: () => void): void {
    const poll = (err: Error) => {
      this.watcher?.close();
      this.watcher = null;
      if (this.polling || this.state !== 'running') return;
      this.polling = true;
      this.log.warn({ event: 'config-watch-failed', file, err: err.message }, 'cannot watch config file; polling it every second instead');
      watchFile(file, { interval: 1_000 }, (cur, prev) => {
        if (cur.mtimeMs === prev.mtimeMs && cur.ino === prev.ino && cur.size === prev.size) return;
        unwatchFile(file);
        this.polling = false;
        onChange();
      });
    };
    if (this.polling) return;
    try {
      this.watcher = watch(file, onChange);
      this.watcher.on('error', (e) => poll(e));
    } catch (e) {
      poll(e as Error);
    }
  }

  /** A rotated tunnel credential: connections move to it one at a time, without a restart. */
  rotateCredential(token: string): void {
    this.ha.rotateToken(token);
  }

  private stopWatching(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.polling && this.o.configFile) unwatchFile(this.o.configFile);
    this.polling = false;
    if (this.reloadTimer) clearTimeout(this.reloadTimer);
  }

  async drain(): Promise<void> {
    if (this.state !== 'running') return;
    this.state = 'draining';
    this.log.info({ event: 'draining', gracePeriodMs: this.o.gracePeriodMs }, 'connector draining');
    this.stopWatching();
    this.discovery?.stop();
    await this.ha.drain();
    await this.proxy.close();
    this.state = 'stopped';
    this.log.info({ event: 'stopped' }, 'connector stopped');
  }

  async stop(): Promise<void> {
    this.state = 'stopped';
    this.stopWatching();
    this.discovery?.stop();
    this.ha.stop();
    await this.proxy.close();
  }
}
