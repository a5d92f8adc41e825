import type { Logger } from 'pino';
import { fleetIssuer } from '@tunnel/protocol';
import type { Store } from '../store/types.js';
import type { FleetKeys } from '../control/keys.js';
import type { LimitHits } from '../relay-limits.js';
import { PolicyTable } from './policy-table.js';
import { AccessKeys, DEFAULT_KEY_EPOCH_MS } from './signing-keys.js';
import { AssertionSigner } from './assertion.js';
import { CookieSealer } from './session-cookie.js';
import { DEFAULT_OIDC_LIMITS, OidcClients, type OidcLimits } from './oidc-client.js';
import { AccessGate, type AccessOutcome } from './access-gate.js';

export interface AccessOptions {
  /** How long each assertion key signs; each is published for three epochs. */
  keyEpochMs?: number;
  /** Assertion lifetime, at most 300 s. */
  assertionSeconds?: number;
  oidc?: Partial<OidcLimits>;
  maxPendingLogins: number;
}

/** Access on one relay: the policy cache, keys, cookies, identity providers and the gate built on them. */
export class Access {
  readonly table: PolicyTable;
  readonly keys: AccessKeys;
  readonly gate: AccessGate;
  readonly issuer: string;

  constructor(store: Store, fleet: FleetKeys, log: Logger, opts: AccessOptions, report?: { onOutcome(o: AccessOutcome): void; hits: LimitHits }) {
    this.table = new PolicyTable(store);
    this.keys = new AccessKeys(fleet.secretKey, opts.keyEpochMs ?? DEFAULT_KEY_EPOCH_MS);
    this.issuer = fleetIssuer(fleet.publicKey);
    this.gate = new AccessGate({
      table: this.table,
      signer: new AssertionSigner(this.keys, this.issuer, opts.assertionSeconds),
      cookies: new CookieSealer(this.keys.cookieKey),
      oidc: new OidcClients({ ...DEFAULT_OIDC_LIMITS, ...opts.oidc }),
      claimNonce: (key, ttlMs) => store.claimNonce(key, ttlMs),
      log: log.child({ component: 'access' }),
      maxPendingLogins: opts.maxPendingLogins,
      onOutcome: (o) => {
        report?.onOutcome(o);
        if (o === 'busy') report?.hits.hit('access_pending_logins');
      },
    });
  }

  load(): Promise<void> {
    return this.table.load();
  }

  close(): void {
    this.table.close();
  }
}
