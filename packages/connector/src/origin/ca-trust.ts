import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { rootCertificates } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { Agent, type Dispatcher } from 'undici';

export class CaFileError extends Error {}

/**
 * A private CA the CLI trusts for relays (`--ca-file`, TUNNEL_CA_FILE, or the
 * one `tunnel login --ca-file` saved in cert.json), on top of the system
 * store: control API calls, relay discovery and wss:// dials all use it.
 * NODE_EXTRA_CA_CERTS works without it (Node adds those at start-up).
 */
class RelayTrust {
  private ca: string[] | undefined;
  private agent: Agent | undefined;
  private path: string | undefined;

  /** Absolute path of the CA file in use, if any. */
  get file(): string | undefined {
    return this.path;
  }

  use(file: string): void {
    const abs = resolve(file);
    if (this.path === abs) return;
    let pem: string;
    try {
      pem = readFileSync(abs, 'utf8');
    } catch (e) {
      throw new CaFileError(`cannot read CA file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    try {
      new X509Certificate(pem);
    } catch {
      throw new CaFileError(`CA file ${file} holds no PEM certificate`);
    }
    this.path = abs;
    this.ca = [...rootCertificates, pem];
    void this.agent?.close();
    this.agent = new Agent({ connect: { ca: this.ca } });
  }

  /** For undici calls; undefined: the global dispatcher (system store + NODE_EXTRA_CA_CERTS). */
  dispatcher(): Dispatcher | undefined {
    return this.agent;
  }

  /** For `ws` / node:https options. */
  tlsOptions(): { ca?: string[] } {
    return this.ca ? { ca: this.ca } : {};
  }
}

export const relayTrust = new RelayTrust();

/** A clearer message for the TLS failures a private CA causes. */
export function certificateHint(code: string | undefined): string {
  return code && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME/i.test(code)
    ? ' (the relay\'s certificate is not trusted here: pass --ca-file CA.pem or set NODE_EXTRA_CA_CERTS to the fleet\'s CA)'
    : '';
}
