import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { AccountClaims } from '@tunnel/protocol';
import type { Store } from '../store/types.js';
import { accessKey, type AccessPolicy, type IdentityProvider, type ServiceToken } from '../store/access-records.js';
import { ApiError } from '../control/api-error.js';
import { checkRoute } from '../zones/zone-grants.js';

/**
 * The account's Access endpoints on the control API (`tunnel access …`):
 *
 *   GET/POST   /v1/access/policies           list / add
 *   DELETE     /v1/access/policies/ID        remove one (or HOSTNAME, with ?path=)
 *   GET/POST   /v1/access/tokens             list / create (the secret is in this answer only)
 *   DELETE     /v1/access/tokens/NAME        revoke (by name or client id)
 *   GET/PUT/DELETE /v1/access/idp            the account's identity provider
 *
 * An account manages only its own records, and adds policies only for
 * hostnames it may route (zones) or routes already.
 */

const email = z.string().trim().toLowerCase().regex(/^[^\s@]+@[^\s@]+\.[^\s@]+$/, 'not an email address').max(320);
const domain = z.string().trim().toLowerCase().regex(/^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$/, 'not a domain name');
const label = z.string().trim().min(1).max(128).regex(/^[\x21-\x7e ]+$/, 'printable ASCII only');
const tokenName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'names are 1-63 letters, digits, dot, dash, underscore');

const PolicyBody = z.strictObject({
  hostname: z.string().min(1).max(253),
  path: z.string().startsWith('/', 'a path starts with /').max(1024).regex(/^[^\s?#]*$/, 'a path prefix has no spaces, query or fragment').default('/'),
  decision: z.enum(['allow', 'deny', 'bypass']).default('allow'),
  emails: z.array(email).max(200).default([]),
  domains: z.array(domain).max(200).default([]),
  groups: z.array(label).max(200).default([]),
  serviceTokens: z.array(tokenName).max(200).default([]),
  sessionSeconds: z.number().int().min(2).max(7 * 24 * 3600).default(3600),
});

const TokenBody = z.strictObject({
  name: tokenName,
  /** Omitted: the token does not expire (it is revoked by hand). */
  ttlSeconds: z.number().int().min(60).max(10 * 365 * 24 * 3600).optional(),
});

const IdpBody = z.strictObject({
  issuer: z
    .string()
    .url()
    .refine((u) => {
      const url = new URL(u);
      return url.protocol === 'https:' || (url.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname));
    }, 'the issuer must be an https:// URL (http:// only on this host)'),
  clientId: z.string().min(1).max(512),
  clientSecret: z.string().min(1).max(4096),
  groupsClaim: z.string().min(1).max(128).default('groups'),
});

export type Answer = { status: number; body: unknown };

/** Null when the path is not an Access endpoint. */
export async function accessApi(store: Store, who: AccountClaims, method: string, parts: readonly string[], query: URLSearchParams, readJson: () => Promise<unknown>): Promise<Answer | null> {
  if (parts[0] !== 'v1' || parts[1] !== 'access') return null;
  const what = parts[2];
  const mine = async () => (await store.listAccessRecords()).filter((r) => r.accountId === who.accountId);

  if (what === 'policies' && parts.length === 3 && method === 'GET') {
    return { status: 200, body: { policies: (await mine()).filter((r): r is AccessPolicy => r.kind === 'policy') } };
  }
  if (what === 'policies' && parts.length === 3 && method === 'POST') {
    const b = PolicyBody.parse(await readJson());
    const hostname = await policyHostname(store, who.accountId, b.hostname);
    const needsLogin = b.emails.length + b.domains.length + b.groups.length > 0;
    if (b.decision === 'allow' && !needsLogin && b.serviceTokens.length === 0) {
      throw new ApiError(400, 'empty_policy', 'an allow policy names who gets in: --allow-email, --allow-domain, --allow-group or --service-token');
    }
    if (needsLogin && !(await store.getAccessRecord(`idp:${who.accountId}`))) {
      throw new ApiError(409, 'no_identity_provider', 'emails, domains and groups need an identity provider: run `tunnel access idp set --issuer URL --client-id ID --client-secret-file FILE` first');
    }
    const all = await mine();
    for (const name of b.serviceTokens) {
      if (!all.some((r) => r.kind === 'service-token' && (r.name === name || r.clientId === name))) throw new ApiError(404, 'token_not_found', `you have no service token named ${name}`);
    }
    const same = all.find((r): r is AccessPolicy => r.kind === 'policy' && r.hostname === hostname && r.pathPrefix === b.path);
    const policy: AccessPolicy = {
      kind: 'policy',
      // Adding a policy for the same hostname and path replaces it (and keeps its audience tag).
      id: same?.id ?? randomUUID(),
      accountId: who.accountId,
      hostname,
      pathPrefix: b.path,
      decision: b.decision,
      include: { emails: b.emails, domains: b.domains, groups: b.groups, serviceTokens: b.serviceTokens },
      audTag: same?.audTag ?? randomBytes(16).toString('hex'),
      sessionSeconds: b.sessionSeconds,
      createdAt: same?.createdAt ?? Date.now(),
    };
    await store.putAccessRecord(policy);
    return { status: same ? 200 : 201, body: { policy } };
  }
  if (what === 'policies' && parts.length === 4 && method === 'DELETE') {
    const ref = parts[3]!.toLowerCase();
    const path = query.get('path');
    const doomed = (await mine()).filter((r): r is AccessPolicy => r.kind === 'policy' && (r.id === ref || (r.hostname === ref && (path === null || r.pathPrefix === path))));
    if (doomed.length === 0) throw new ApiError(404, 'policy_not_found', `you have no Access policy ${ref}${path ? ` for path ${path}` : ''}`);
    for (const p of doomed) await store.deleteAccessRecord(accessKey(p));
    return { status: 200, body: { deleted: doomed.map((p) => p.id) } };
  }

  if (what === 'tokens' && parts.length === 3 && method === 'GET') {
    const tokens = (await mine()).filter((r): r is ServiceToken => r.kind === 'service-token');
    return { status: 200, body: { tokens: tokens.map(({ secretSha256: _secret, ...rest }) => rest) } };
  }
  if (what === 'tokens' && parts.length === 3 && method === 'POST') {
    const b = TokenBody.parse(await readJson());
    if ((await mine()).some((r) => r.kind === 'service-token' && r.name === b.name)) throw new ApiError(409, 'token_exists', `you already have a service token named ${b.name}`);
    const clientId = `${randomBytes(16).toString('hex')}.access`;
    const clientSecret = randomBytes(32).toString('hex');
    const token: ServiceToken = {
      kind: 'service-token',
      clientId,
      accountId: who.accountId,
      name: b.name,
      // 32 random bytes need no slow hash: nothing to brute-force.
      secretSha256: createHash('sha256').update(clientSecret, 'utf8').digest('hex'),
      createdAt: Date.now(),
      ...(b.ttlSeconds !== undefined ? { expiresAt: Date.now() + b.ttlSeconds * 1000 } : {}),
    };
    await store.putAccessRecord(token);
    const { secretSha256: _s, ...shown } = token;
    return { status: 201, body: { token: shown, clientSecret } };
  }
  if (what === 'tokens' && parts.length === 4 && method === 'DELETE') {
    const ref = parts[3]!;
    const t = (await mine()).find((r): r is ServiceToken => r.kind === 'service-token' && (r.name === ref || r.clientId === ref));
    if (!t) throw new ApiError(404, 'token_not_found', `you have no service token ${ref}`);
    await store.deleteAccessRecord(accessKey(t));
    return { status: 200, body: { revoked: t.clientId, name: t.name } };
  }

  if (what === 'idp' && parts.length === 3) {
    const key = `idp:${who.accountId}`;
    if (method === 'GET') {
      const r = await store.getAccessRecord(key);
      if (r?.kind !== 'idp') throw new ApiError(404, 'no_identity_provider', 'no identity provider is configured for your account');
      return { status: 200, body: { idp: shownIdp(r) } };
    }
    if (method === 'PUT') {
      const b = IdpBody.parse(await readJson());
      const idp: IdentityProvider = { kind: 'idp', accountId: who.accountId, issuer: b.issuer, clientId: b.clientId, clientSecret: b.clientSecret, groupsClaim: b.groupsClaim, createdAt: Date.now() };
      await store.putAccessRecord(idp);
      return { status: 200, body: { idp: shownIdp(idp) } };
    }
    if (method === 'DELETE') {
      if (!(await store.deleteAccessRecord(key))) throw new ApiError(404, 'no_identity_provider', 'no identity provider is configured for your account');
      return { status: 200, body: { deleted: true } };
    }
  }
  throw new ApiError(404, 'not_found', `no such endpoint ${method} /${parts.join('/')}`);
}

function shownIdp(r: IdentityProvider) {
  const { clientSecret: _secret, ...rest } = r;
  return rest;
}

/**
 * A policy's hostname must be one the account may route (inside a zone it
 * holds), or one it already routes (a store from before zones).
 */
async function policyHostname(store: Store, accountId: string, raw: string): Promise<string> {
  const name = raw.trim().toLowerCase().replace(/\.$/, '');
  const routed = await store.getRoute(name);
  if (routed?.accountId === accountId) return name;
  return checkRoute(store, accountId, name);
}
