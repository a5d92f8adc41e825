import { X509Certificate } from 'node:crypto';
import type * as Acme from 'acme-client';
import type { Logger } from 'pino';
import { challengeRecordName, runDnsHook, type DnsHookAction, type DnsHookSettings } from './dns-hook.js';
import type { AcmeStore, ChallengeRecord, StoredCertificate } from './acme-store.js';

// acme-client and its dependencies (≈ 12 MB of RSS) load on the first ACME
// use: a relay without --acme-directory never needs them.
let acmeModule: Promise<typeof Acme> | null = null;
const loadAcme = (): Promise<typeof Acme> => (acmeModule ??= import('acme-client'));

export type ChallengeType = 'http-01' | 'tls-alpn-01' | 'dns-01';

export interface AcmeSettings {
  /** ACME directory URL (Let's Encrypt's, or a test CA's). */
  directory: string;
  email: string;
  /** How names are proven: the public HTTP listener, the HTTPS listener, or a DNS hook. */
  challenge: ChallengeType;
  /** DNS-01: the operator's command that publishes and removes the TXT record (see dns-hook.ts). */
  dnsHook?: DnsHookSettings;
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
  private client: Acme.Client | null = null;

  constructor(
    private readonly settings: AcmeSettings,
    private readonly store: AcmeStore,
    private readonly board: ChallengeBoard,
    private readonly relayId: string,
    private readonly log: Logger,
  ) {}

  private async account(): Promise<Acme.Client> {
    const acme = await loadAcme();
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
    const acme = await loadAcme();
    const key = await acme.crypto.createPrivateEcdsaKey();
    const [, csr] = await acme.crypto.createCsr({ commonName: name.startsWith('*.') ? undefined : name, altNames: [name] }, key);
    // A wildcard can only be proven in DNS (RFC 8555 §7.1.3): *.zone goes through the hook whatever the default.
    const type: ChallengeType = name.startsWith('*.') ? 'dns-01' : this.settings.challenge;
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
          await this.dnsHook('clear', authz.identifier.value, keyAuthorization).catch((e: Error) =>
            this.log.warn({ event: 'acme-dns-hook-failed', action: 'clear', err: e.message }, 'DNS hook could not clear the challenge record'),
          );
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

  private dnsHook(action: DnsHookAction, name: string, value: string): Promise<void> {
    const hook = this.settings.dnsHook;
    if (!hook) return Promise.reject(new Error('dns-01 needs --acme-dns-hook'));
    const record = challengeRecordName(name);
    this.log.info({ event: 'acme-dns-hook', action, record }, 'running the DNS hook');
    return runDnsHook(hook, action, record, value);
  }
}

/** acme-client polls order and challenge status with these (its default starts at 5 s). */
const CLIENT_BACKOFF = { backoffAttempts: 12, backoffMin: 250, backoffMax: 10_000 };

/** The self-signed certificate that answers a TLS-ALPN-01 challenge (RFC 8737). */
export async function alpnChallengeCertificate(name: string, keyAuthorization: string): Promise<{ key: string; cert: string }> {
  // ECDSA like the certificates we order: OpenSSL keeps an ECDSA default certificate over an
  // RSA one chosen by SNI, so an RSA challenge certificate behind an ECDSA fallback is never sent.
  const acme = await loadAcme();
  const ecKey = await acme.crypto.createPrivateEcdsaKey();
  const [key, cert] = await acme.crypto.createAlpnCertificate({ identifier: { type: 'dns', value: name } } as Acme.Authorization, keyAuthorization, ecKey);
  return { key: key.toString(), cert: cert.toString() };
}
