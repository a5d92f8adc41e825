import http from 'node:http';
import https from 'node:https';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { createSecureContext, rootCertificates, type Server as TlsServer } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { Agent } from 'undici';
import type { Logger } from 'pino';
import type { ListenAddress } from './listen.js';

/** cert/key for every listener; `ca` verifies other relays (peer forwarding, fleet stats). */
export interface TlsFiles {
  cert: string;
  key: string;
  /** PEM bundle of the fleet's CA; unset: the system store plus NODE_EXTRA_CA_CERTS. */
  ca?: string;
}

export class TlsConfigError extends Error {}

interface LoadedPair {
  cert: Buffer;
  key: Buffer;
  fingerprint: string;
  /** notAfter, ms since the epoch. */
  expiresAt: number;
}

function loadPair(files: TlsFiles): LoadedPair {
  let cert: Buffer;
  let key: Buffer;
  try {
    cert = readFileSync(files.cert);
  } catch (e) {
    throw new TlsConfigError(`cannot read TLS certificate ${files.cert}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    key = readFileSync(files.key);
  } catch (e) {
    throw new TlsConfigError(`cannot read TLS key ${files.key}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    // Refuses a key that does not belong to the certificate (a half-written rotation).
    createSecureContext({ cert, key });
    const x509 = new X509Certificate(cert);
    return { cert, key, fingerprint: x509.fingerprint256, expiresAt: Date.parse(x509.validTo) };
  } catch (e) {
    throw new TlsConfigError(`TLS certificate ${files.cert} / key ${files.key}: ${(e as Error).message}`);
  }
}

export type ReloadTrigger = 'file-change' | 'SIGHUP';

/**
 * The relay's certificate, shared by every TLS listener. A reload (file
 * change, SIGHUP) swaps the secure context of each server in place: new
 * handshakes get the new certificate, open connections keep theirs. A pair
 * that does not load (a key written before its certificate) is logged and
 * the running one stays; the next file event tries again.
 */
export class RelayCertificate {
  private pair: LoadedPair;
  private readonly servers = new Set<TlsServer>();
  private watchers: FSWatcher[] = [];
  private debounce: NodeJS.Timeout | null = null;
  readonly trustedCa: Buffer | undefined;
  /** Reloads that swapped in a new pair, and ones refused (for /metrics). */
  readonly reloads = { ok: 0, failed: 0 };

  constructor(
    readonly files: TlsFiles,
    private readonly log: Logger,
  ) {
    this.pair = loadPair(files);
    if (files.ca) {
      try {
        this.trustedCa = readFileSync(files.ca);
        new X509Certificate(this.trustedCa);
      } catch (e) {
        throw new TlsConfigError(`cannot use CA file ${files.ca}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    }
  }

  get fingerprint(): string {
    return this.pair.fingerprint;
  }

  /** When the certificate being served expires (ms since the epoch). */
  get expiresAt(): number {
    return this.pair.expiresAt;
  }

  createServer(opts: http.ServerOptions, handler?: http.RequestListener): https.Server {
    return this.adopt(https.createServer({ ...opts, ...this.pem }, handler));
  }

  /** The pair being served now, for a server made elsewhere (then `adopt` it). */
  get pem(): { cert: Buffer; key: Buffer } {
    return { cert: this.pair.cert, key: this.pair.key };
  }

  /** A TLS server (the public HTTP/2 one) that reloads with this certificate. */
  adopt<S extends TlsServer>(s: S): S {
    this.servers.add(s);
    s.once('close', () => this.servers.delete(s));
    return s;
  }

  /** Re-read the files; true when the servers now use them. */
  reload(trigger: ReloadTrigger): boolean {
    let next: LoadedPair;
    try {
      next = loadPair(this.files);
    } catch (e) {
      this.reloads.failed++;
      this.log.warn({ event: 'tls-reload-failed', trigger, err: (e as Error).message }, 'new TLS certificate not loaded; keeping the running one');
      return false;
    }
    const changed = !next.cert.equals(this.pair.cert) || !next.key.equals(this.pair.key);
    if (changed) {
      for (const s of this.servers) s.setSecureContext({ cert: next.cert, key: next.key });
      this.pair = next;
      this.reloads.ok++;
    }
    // A file event that changed nothing (an editor touching the directory) is not news; a SIGHUP always answers.
    if (changed || trigger === 'SIGHUP') {
      this.log.info({ event: 'tls-reloaded', trigger, changed, fingerprint: next.fingerprint, servers: this.servers.size }, 'TLS certificate reloaded');
    }
    return true;
  }

  /**
   * Watch the directories, not the files: certificate tools replace files by
   * rename (and Kubernetes swaps a symlinked directory), which a watch on the
   * old inode never sees.
   */
  watch(): void {
    const dirs = new Set([dirname(this.files.cert), dirname(this.files.key)]);
    const names = new Set([basename(this.files.cert), basename(this.files.key)]);
    // Only our files (or Kubernetes' `..data` swap, or an event without a name): a log file
    // written in the same directory must not make every write a reload.
    const ours = (name: string | Buffer | null) => name === null || names.has(String(name)) || String(name).startsWith('..');
    for (const dir of dirs) {
      try {
        const w = watch(dir, (_event, name) => {
          if (ours(name)) this.scheduleReload();
        });
        w.on('error', () => {});
        this.watchers.push(w);
      } catch (e) {
        this.log.warn({ dir, err: (e as Error).message }, 'cannot watch the TLS certificate directory; reload with SIGHUP');
      }
    }
  }

  private scheduleReload(): void {
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = null;
      this.reload('file-change');
    }, 200);
    this.debounce.unref();
  }

  close(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.debounce) clearTimeout(this.debounce);
  }

  /** Client-side trust for calls to other relays: the configured CA added to the system store. */
  peerCa(): string[] | undefined {
    return this.trustedCa ? [...rootCertificates, this.trustedCa.toString('utf8')] : undefined;
  }

  peerDispatcher(): Agent | undefined {
    const ca = this.peerCa();
    return ca ? new Agent({ connect: { ca } }) : undefined;
  }
}

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || h === '::ffff:127.0.0.1';
}

/**
 * Without a certificate, the listeners that carry secrets (operator key,
 * dashboard cookie, login polling, tunnel tokens, forwarded requests) may be
 * plain only on loopback, or when the operator says so by name.
 */
export function checkPlainListeners(listen: Partial<Record<'connect' | 'control' | 'peer', ListenAddress>>, insecureHttpControl: boolean): void {
  if (insecureHttpControl) return;
  const exposed = (Object.entries(listen) as Array<[string, ListenAddress | undefined]>).filter(([, a]) => a && !isLoopback(a.host));
  if (exposed.length === 0) return;
  const list = exposed.map(([name, a]) => `--${name} ${a!.host}:${a!.port}`).join(', ');
  throw new TlsConfigError(
    `${list}: a non-loopback address without TLS would carry credentials in clear. Give --tls-cert/--tls-key, bind to 127.0.0.1, or pass --insecure-http-control to serve plain HTTP anyway (behind a TLS-terminating proxy, or on a private network)`,
  );
}
