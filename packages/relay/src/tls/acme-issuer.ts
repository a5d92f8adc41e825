import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import * as acme from 'acme-client';
import type { Logger } from 'pino';
import type { AcmeStore, ChallengeRecord, StoredCertificate } from './acme-store.js';

export type ChallengeType = 'http-01' | 'tls-alpn-01' | 'dns-01';

export interface AcmeSettings {
  /** ACME directory URL (Let's Encrypt's, or a test CA's). */
  directory: string;
  email: string;
  /** How names are proven: the public HTTP listener, the HTTPS listener, or a DNS hook. */
  challenge: ChallengeType;
  /**
   * DNS-01: a command run as `HOOK set|unset _acme-challenge.NAME VALUE`
   * (no shell); it must return once the TXT record is published.
   */
  dnsHook?: string;
}

/** Where a new challenge is announced so this relay (and, through the store, the others) answer it. */
export interface ChallengeBoard {
  add(rec: ChallengeRecord): void;
  remove(rec: ChallengeRecord): void;
}

/**
 * Orders one certificate from the ACME CA with acme-client. The account
 * key is made once per directory and kept in the store (under a lock, so a
 * fleet starting at once makes one account). Challenges go to the store
 * first, then the CA is told: any relay may be the one it validates against.
 */
export class AcmeIssuer {
  private client: acme.Client | null = null;

  constructor(
    private readonly settings: AcmeSettings,
    private readonly store: AcmeStore,
    private readonly board: ChallengeBoard,
    private readonly relayId: string,
    private readonly log: Logger,
  ) {}

  private async account(): Promise<acme.Client> {
    if (this.client) return this.client;
    const { directory, email } = this.settings;
    let rec = await this.store.getAccount(directory);
    if (!rec) {
      const release = await this.store.lock(`account ${directory}`, 60_000);
      if (!release) throw new Error('another relay is creating the ACME account; retrying later');
      try {
        rec = (await this.store.getAccount(directory)) ?? { directory, keyPem: (await acme.crypto.createPrivateEcdsaKey()).toString() };
        const client = new acme.Client({ directoryUrl: directory, accountKey: rec.keyPem, ...CLIENT_BACKOFF });
        if (!rec.url) {
          await client.createAccount({ termsOfServiceAgreed: true, contact: [`mailto:${email}`] });
          rec = { ...rec, url: client.getAccountUrl() };
          await this.store.putAccount(rec);
          this.log.info({ event: 'acme-account', directory, url: rec.url }, 'ACME account registered');
        }
      } finally {
        await release();
      }
    }
    this.client = new acme.Client({ directoryUrl: directory, accountKey: rec.keyPem, ...(rec.url ? { accountUrl: rec.url } : {}), ...CLIENT_BACKOFF });
    return this.client;
  }

  async issue(name: string): Promise<StoredCertificate> {
    const client = await this.account();
    const key = await acme.crypto.createPrivateEcdsaKey();
    const [, csr] = await acme.crypto.createCsr({ commonName: name.startsWith('*.') ? undefined : name, altNames: [name] }, key);
    const type = this.settings.challenge;
    const made = new Map<string, ChallengeRecord>();
    const pem = await client.auto({
      csr,
      email: this.settings.email,
      termsOfServiceAgreed: true,
      challengePriority: [type],
      // The CA's own check is the one that counts; a self-check would ask the system resolver.
      skipChallengeVerification: true,
      challengeCreateFn: async (authz, challenge, keyAuthorization) => {
        const rec = this.challengeRecord(authz.identifier.value, challenge, keyAuthorization);
        if (rec) {
          made.set(challenge.url, rec);
          await this.store.putChallenge(rec);
          this.board.add(rec);
        } else {
          await this.dnsHook('set', authz.identifier.value, keyAuthorization);
        }
      },
      challengeRemoveFn: async (authz, challenge, keyAuthorization) => {
        const rec = made.get(challenge.url);
        if (rec) {
          this.board.remove(rec);
          await this.store.deleteChallenge(rec).catch(() => {});
        } else if (challenge.type === 'dns-01') {
          await this.dnsHook('unset', authz.identifier.value, keyAuthorization).catch(() => {});
        }
      },
    });
    const leaf = new X509Certificate(pem);
    return { name, certPem: pem, keyPem: key.toString(), notBefore: Date.parse(leaf.validFrom), notAfter: Date.parse(leaf.validTo), orderedBy: this.relayId };
  }

  private challengeRecord(name: string, challenge: { type: string; token?: string }, keyAuthorization: string): ChallengeRecord | undefined {
    const expiresAt = Date.now() + 10 * 60_000;
    if (challenge.type === 'http-01') return { type: 'http-01', token: String(challenge.token), keyAuthorization, expiresAt };
    if (challenge.type === 'tls-alpn-01') return { type: 'tls-alpn-01', name, keyAuthorization, expiresAt };
    return undefined;
  }

  private dnsHook(action: 'set' | 'unset', name: string, value: string): Promise<void> {
    const hook = this.settings.dnsHook;
    if (!hook) return Promise.reject(new Error('dns-01 needs --acme-dns-hook'));
    const record = `_acme-challenge.${name.replace(/^\*\./, '')}`;
    return new Promise((resolve, reject) =>
      execFile(hook, [action, record, value], { timeout: 120_000 }, (err, _out, stderr) =>
        err ? reject(new Error(`DNS hook ${hook} ${action} ${record} failed: ${stderr.trim().slice(0, 300) || err.message}`)) : resolve(),
      ),
    );
  }
}

/** acme-client polls order and challenge status with these (its default starts at 5 s). */
const CLIENT_BACKOFF = { backoffAttempts: 12, backoffMin: 250, backoffMax: 10_000 };

/** The self-signed certificate that answers a TLS-ALPN-01 challenge (RFC 8737). */
export async function alpnChallengeCertificate(name: string, keyAuthorization: string): Promise<{ key: string; cert: string }> {
  // ECDSA like the certificates we order: OpenSSL keeps an ECDSA default certificate over an
  // RSA one chosen by SNI, so an RSA challenge certificate behind an ECDSA fallback is never sent.
  const ecKey = await acme.crypto.createPrivateEcdsaKey();
  const [key, cert] = await acme.crypto.createAlpnCertificate({ identifier: { type: 'dns', value: name } } as acme.Authorization, keyAuthorization, ecKey);
  return { key: key.toString(), cert: cert.toString() };
}
