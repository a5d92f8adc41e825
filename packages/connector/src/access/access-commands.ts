import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { parseDuration } from '@tunnel/protocol';
import { api, readCert, ControlError } from '../ha/control-client.js';
import { out, outputOpt, table } from '../cli/provisioning-commands.js';

/**
 * `tunnel access policy|token|idp`: the account's Access records on the
 * fleet (the control API's /v1/access endpoints), with cert.json's credential.
 */

interface PolicyRecord {
  id: string;
  hostname: string;
  pathPrefix: string;
  decision: string;
  include: { emails: string[]; domains: string[]; groups: string[]; serviceTokens: string[] };
  audTag: string;
  sessionSeconds: number;
}
interface TokenRecord {
  clientId: string;
  name: string;
  createdAt: number;
  expiresAt?: number;
}

const collect = (v: string, prev: string[]) => prev.concat(v.split(',').map((x) => x.trim()).filter(Boolean));

function seconds(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  let ms: number;
  try {
    ms = parseDuration(v);
  } catch (e) {
    throw new ControlError(0, 'bad_flag', `--${flag}: ${(e as Error).message}`);
  }
  if (ms < 1000) throw new ControlError(0, 'bad_flag', `--${flag} must be at least 1s, not ${JSON.stringify(v)}`);
  return Math.round(ms / 1000);
}

function who(p: PolicyRecord): string {
  if (p.decision !== 'allow') return p.decision;
  const i = p.include;
  return [...i.emails.map((e) => `email:${e}`), ...i.domains.map((d) => `domain:${d}`), ...i.groups.map((g) => `group:${g}`), ...i.serviceTokens.map((t) => `token:${t}`)].join(',');
}

export function registerAccessManagement(access: Command): void {
  const policy = access.command('policy').description('who may reach a hostname: Access policies checked by the relays');
  policy
    .command('add <hostname>')
    .description('protect HOSTNAME (exact or *.domain), or a path under it: only the identities named get in')
    .option('--path <prefix>', 'only this path prefix (default: the whole hostname)', '/')
    .option('--allow-email <email>', 'let this user in (repeatable, or comma-separated)', collect, [])
    .option('--allow-domain <domain>', 'let every verified email of this domain in', collect, [])
    .option('--allow-group <group>', "let members of this identity-provider group in", collect, [])
    .option('--service-token <name>', 'let this service token in (tunnel access token create)', collect, [])
    .option('--deny', 'refuse everyone')
    .option('--bypass', 'let everyone in, without identity')
    .option('--session-duration <duration>', 'how long a browser login lasts on this hostname', '1h')
    .addOption(outputOpt())
    .action(async (hostname: string, o: { path: string; allowEmail: string[]; allowDomain: string[]; allowGroup: string[]; serviceToken: string[]; deny?: boolean; bypass?: boolean; sessionDuration: string; output: string }) => {
      if (o.deny && o.bypass) throw new ControlError(0, 'bad_flag', '--deny and --bypass exclude each other');
      const cert = readCert();
      const r = await api<{ policy: PolicyRecord }>(cert.controlUrl, 'POST', '/v1/access/policies', {
        auth: cert.credential,
        body: {
          hostname,
          path: o.path,
          decision: o.deny ? 'deny' : o.bypass ? 'bypass' : 'allow',
          emails: o.allowEmail,
          domains: o.allowDomain,
          groups: o.allowGroup,
          serviceTokens: o.serviceToken,
          sessionSeconds: seconds('session-duration', o.sessionDuration),
        },
      });
      const p = r.body.policy;
      if (o.output === 'json') return out(JSON.stringify(p));
      out(`${r.status === 201 ? 'Added' : 'Replaced'} Access policy ${p.id} on ${p.hostname}${p.pathPrefix === '/' ? '' : p.pathPrefix}: ${who(p)}`);
      out(`Audience tag (for originRequest.access.audTag): ${p.audTag}`);
    });
  policy
    .command('list')
    .description("list your account's Access policies")
    .addOption(outputOpt())
    .action(async (o: { output: string }) => {
      const cert = readCert();
      const r = await api<{ policies: PolicyRecord[] }>(cert.controlUrl, 'GET', '/v1/access/policies', { auth: cert.credential });
      if (o.output === 'json') return out(JSON.stringify(r.body.policies));
      if (r.body.policies.length === 0) return out('No Access policies: every hostname is open. Add one with `tunnel access policy add HOSTNAME --allow-email ...`');
      out(table([['ID', 'HOSTNAME', 'PATH', 'AUD TAG', 'WHO'], ...r.body.policies.map((p) => [p.id, p.hostname, p.pathPrefix, p.audTag, who(p)])]));
    });
  policy
    .command('remove <hostname-or-id>')
    .description('remove a policy (by id, or every policy of a hostname; --path narrows it)')
    .option('--path <prefix>', 'only the policy of this path prefix')
    .action(async (ref: string, o: { path?: string }) => {
      const cert = readCert();
      const q = o.path ? `?path=${encodeURIComponent(o.path)}` : '';
      const r = await api<{ deleted: string[] }>(cert.controlUrl, 'DELETE', `/v1/access/policies/${encodeURIComponent(ref)}${q}`, { auth: cert.credential });
      out(`Removed ${r.body.deleted.length} Access polic${r.body.deleted.length === 1 ? 'y' : 'ies'}: ${r.body.deleted.join(', ')}`);
    });

  const token = access.command('token').description('service tokens: credentials for machines (curl, CI) to pass Access');
  token
    .command('create <name>')
    .description('create a service token; its secret is shown once')
    .option('--duration <duration>', 'expire after this long (default: never; revoke by hand)')
    .addOption(outputOpt())
    .action(async (name: string, o: { duration?: string; output: string }) => {
      const cert = readCert();
      const ttl = seconds('duration', o.duration);
      const r = await api<{ token: TokenRecord; clientSecret: string }>(cert.controlUrl, 'POST', '/v1/access/tokens', { auth: cert.credential, body: { name, ...(ttl !== undefined ? { ttlSeconds: ttl } : {}) } });
      if (o.output === 'json') return out(JSON.stringify({ ...r.body.token, clientSecret: r.body.clientSecret }));
      out(`Created service token ${name}. The secret is shown only now: keep it like a password.`);
      out(`Tunnel-Access-Client-Id: ${r.body.token.clientId}`);
      out(`Tunnel-Access-Client-Secret: ${r.body.clientSecret}`);
    });
  token
    .command('list')
    .description("list your account's service tokens (never their secrets)")
    .addOption(outputOpt())
    .action(async (o: { output: string }) => {
      const cert = readCert();
      const r = await api<{ tokens: TokenRecord[] }>(cert.controlUrl, 'GET', '/v1/access/tokens', { auth: cert.credential });
      if (o.output === 'json') return out(JSON.stringify(r.body.tokens));
      if (r.body.tokens.length === 0) return out('No service tokens: `tunnel access token create NAME`');
      out(table([['NAME', 'CLIENT ID', 'CREATED', 'EXPIRES'], ...r.body.tokens.map((t) => [t.name, t.clientId, new Date(t.createdAt).toISOString(), t.expiresAt ? new Date(t.expiresAt).toISOString() : 'never'])]));
    });
  token
    .command('revoke <name-or-client-id>')
    .description('revoke a service token: every relay refuses it within seconds')
    .action(async (ref: string) => {
      const cert = readCert();
      const r = await api<{ revoked: string; name: string }>(cert.controlUrl, 'DELETE', `/v1/access/tokens/${encodeURIComponent(ref)}`, { auth: cert.credential });
      out(`Revoked service token ${r.body.name} (${r.body.revoked})`);
    });

  const idp = access.command('idp').description("your account's OpenID Connect identity provider (for --allow-email/domain/group)");
  idp
    .command('set')
    .description('use an OpenID Connect provider; register https://HOSTNAME/.tunnel/access/callback there for each protected hostname')
    .requiredOption('--issuer <url>', 'the issuer URL (its /.well-known/openid-configuration is read)')
    .requiredOption('--client-id <id>', 'the client id the provider gave the fleet')
    .requiredOption('--client-secret-file <file>', 'a file holding the client secret (never on the command line)')
    .option('--groups-claim <claim>', 'the claim that lists the user\'s groups', 'groups')
    .action(async (o: { issuer: string; clientId: string; clientSecretFile: string; groupsClaim: string }) => {
      let secret: string;
      try {
        secret = readFileSync(o.clientSecretFile, 'utf8').trim();
      } catch (e) {
        throw new ControlError(0, 'bad_file', `cannot read --client-secret-file ${o.clientSecretFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      if (!secret) throw new ControlError(0, 'bad_file', `--client-secret-file ${o.clientSecretFile} is empty`);
      const cert = readCert();
      const r = await api<{ idp: { issuer: string; clientId: string; groupsClaim: string } }>(cert.controlUrl, 'PUT', '/v1/access/idp', {
        auth: cert.credential,
        body: { issuer: o.issuer, clientId: o.clientId, clientSecret: secret, groupsClaim: o.groupsClaim },
      });
      out(`Identity provider set: ${r.body.idp.issuer} (client ${r.body.idp.clientId}, groups from "${r.body.idp.groupsClaim}")`);
    });
  idp
    .command('show')
    .description('show the identity provider (never its secret)')
    .addOption(outputOpt())
    .action(async (o: { output: string }) => {
      const cert = readCert();
      const r = await api<{ idp: { issuer: string; clientId: string; groupsClaim: string } }>(cert.controlUrl, 'GET', '/v1/access/idp', { auth: cert.credential });
      if (o.output === 'json') return out(JSON.stringify(r.body.idp));
      out(`ISSUER:  ${r.body.idp.issuer}\nCLIENT:  ${r.body.idp.clientId}\nGROUPS:  ${r.body.idp.groupsClaim}`);
    });
  idp
    .command('remove')
    .description('remove the identity provider (logins stop; service tokens keep working)')
    .action(async () => {
      const cert = readCert();
      await api(cert.controlUrl, 'DELETE', '/v1/access/idp', { auth: cert.credential });
      out('Identity provider removed');
    });
}
