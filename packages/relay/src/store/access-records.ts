// Access records (DESIGN §14) as the fleet store keeps them: policies,
// service tokens and per-account identity providers. Both stores hold them
// in one collection keyed by `accessKey(record)`, mirror them in memory and
// announce every change as an `access` event, so each relay's policy cache
// is current fleet-wide within a second or two.

import { z } from 'zod';

const ms = z.number().int().nonnegative();
const str = z.string().min(1);
const list = z.array(z.string().min(1).max(320)).max(200);

/**
 * What a policy lets through. Emails, domains and groups need a browser
 * login at the account's identity provider; service tokens are named by the
 * token's name (the account's own, checked when the request arrives).
 */
export const accessIncludeSchema = z.strictObject({
  emails: list,
  domains: list,
  groups: list,
  serviceTokens: list,
});
export type AccessInclude = z.infer<typeof accessIncludeSchema>;

/**
 * One policy: a hostname (exact or `*.` wildcard, as routes) and a path
 * prefix; the longest matching prefix of a hostname decides.
 * - allow: only identities in `include` get in, each request carrying a
 *   signed assertion for `audTag`;
 * - deny: nobody gets in;
 * - bypass: everyone gets in, without identity (and without an assertion).
 */
export const accessPolicySchema = z.strictObject({
  kind: z.literal('policy'),
  id: str,
  accountId: str,
  hostname: str,
  pathPrefix: z.string().startsWith('/').max(1024),
  decision: z.enum(['allow', 'deny', 'bypass']),
  include: accessIncludeSchema,
  /** The assertion's `aud`: what an origin's `audTag` list names. */
  audTag: str,
  /** Seconds a browser session (the relay's cookie) lasts on this hostname. */
  sessionSeconds: z.number().int().min(2).max(7 * 24 * 3600),
  createdAt: ms,
});
export type AccessPolicy = z.infer<typeof accessPolicySchema>;

/** A machine credential: `clientId` is public, the secret is kept only as its SHA-256 (it is 32 random bytes). */
export const serviceTokenSchema = z.strictObject({
  kind: z.literal('service-token'),
  clientId: str,
  accountId: str,
  name: str,
  secretSha256: z.string().regex(/^[0-9a-f]{64}$/),
  createdAt: ms,
  expiresAt: ms.optional(),
});
export type ServiceToken = z.infer<typeof serviceTokenSchema>;

/** The account's OpenID Connect provider; the relay is its confidential client. */
export const identityProviderSchema = z.strictObject({
  kind: z.literal('idp'),
  accountId: str,
  issuer: z.string().url(),
  clientId: str,
  clientSecret: str,
  /** The id_token / userinfo claim that lists the user's groups. */
  groupsClaim: str,
  createdAt: ms,
});
export type IdentityProvider = z.infer<typeof identityProviderSchema>;

export const accessRecordSchema = z.discriminatedUnion('kind', [accessPolicySchema, serviceTokenSchema, identityProviderSchema]);
export type AccessRecord = z.infer<typeof accessRecordSchema>;

/** The record's unique key in the store. */
export function accessKey(r: AccessRecord): string {
  switch (r.kind) {
    case 'policy':
      return `policy:${r.id}`;
    case 'service-token':
      return `token:${r.clientId}`;
    case 'idp':
      return `idp:${r.accountId}`;
  }
}
