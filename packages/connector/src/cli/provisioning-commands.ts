import type { Command } from 'commander';
import { Option } from 'commander';
import { existsSync, unlinkSync } from 'node:fs';
import { boxKeyPair, openSealed, peekClaims } from '@tunnel/protocol';
import { api, certPath, readCert, writeSecretFile, writeSecretText, ControlError, type AccountCert } from '../ha/control-client.js';
import { tunnelHome, findCredentialsByName, credentialsFileFor, UnsafeIdError } from './tunnel-home.js';
import { relayTrust } from '../origin/ca-trust.js';
import { resolveToken, type TunnelCredentialsFile } from './credentials.js';
import { parseDuration } from '@tunnel/protocol';
import { describeRelay } from '../ha/relay-lookup.js';

interface TunnelRecord {
  id: string;
  name: string;
  accountId: string;
  createdAt: number;
  connections?: number;
}
interface RouteRecord {
  hostname: string;
  tunnelId: string;
  createdAt: number;
}
interface ConnectorRecord {
  connectorId: string;
  version: string;
  clientIp: string;
  connections: Array<{ connIndex: number; relayId: string; connectionId: string; connectedAt: number }>;
}

export const out = (s: string): void => void process.stdout.write(s.endsWith('\n') ? s : s + '\n');
const err = (s: string) => process.stderr.write(s.endsWith('\n') ? s : s + '\n');
export const outputOpt = () => new Option('--output <format>', 'table for people, json for scripts').choices(['table', 'json']).default('table');

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

function age(ms: number): string {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function registerProvisioningCommands(program: Command): void {
  program
    .command('login')
    .description('log in to a relay fleet: approve a short code (or use --enroll TOKEN), writes TUNNEL_HOME/cert.json')
    .requiredOption('--relay <url>', 'any URL of a relay (public, control API or connector endpoint), e.g. https://relay.example.com:7000 (a private CA: --ca-file or NODE_EXTRA_CA_CERTS)')
    .option('--enroll <token>', 'non-interactive: an enrollment token from `tunnel-relay account create` (single use unless issued --reusable)')
    .option('--refresh', 'exchange the still-valid account credential in cert.json for a fresh one (the old one is revoked)')
    .option('--poll-interval <ms>', 'how often to ask whether the code was approved', '1000')
    .action(async (o: { relay: string; enroll?: string; refresh?: boolean; pollInterval: string }) => {
      // Any of the relay's URLs: its /.well-known/tunnel-relay names the control API.
      const current = o.refresh ? readCert() : undefined;
      const relay = await describeRelay(o.relay, { pinnedFleetKey: current ? pinnedFleetKey(current) : null });
      if (!relay.control) throw new ControlError(0, 'no_control_api', `the relay at ${o.relay} (${relay.relayId}) serves no control API: log in through a relay that does`);
      const base = relay.control;
      const learned = { relay };
      if (current) {
        const r = await api<{ credential: string; accountId: string; accountName: string }>(base, 'POST', '/v1/account/refresh', { auth: current.credential });
        saveCert({ accountId: r.body.accountId, accountName: r.body.accountName, controlUrl: base, credential: r.body.credential, ...(current.caFile ? { caFile: current.caFile } : caFileField()), ...learned });
        return;
      }
      if (existsSync(certPath())) err(`note: replacing ${certPath()}`);
      if (o.enroll) {
        const r = await api<{ credential: string; accountId: string; accountName: string }>(base, 'POST', '/v1/enroll', { body: { token: o.enroll } });
        saveCert({ accountId: r.body.accountId, accountName: r.body.accountName, controlUrl: base, credential: r.body.credential, ...caFileField(), ...learned });
        return;
      }
      const keys = boxKeyPair();
      const start = await api<{ code: string; expiresAt: number; approveUrl: string }>(base, 'POST', '/v1/login', { body: { boxPublicKey: keys.publicKey } });
      const { code, expiresAt, approveUrl } = start.body;
      out(`To log in, approve this code: ${code}`);
      out(`  in the relay dashboard: ${approveUrl}`);
      out(`  or on a relay host:      tunnel-relay login approve ${code} --account NAME`);
      out(`Waiting for approval (expires ${new Date(expiresAt).toISOString()})...`);
      const every = Math.max(100, Number(o.pollInterval));
      for (;;) {
        const r = await api<{ state: string; sealedCredential?: string }>(base, 'GET', `/v1/login/${code}`).catch((e: unknown) => {
          // Our own words, not the relay's: a denial is final, and says so.
          if (e instanceof ControlError && e.code === 'login_denied') throw new ControlError(e.status, 'login_denied', `the operator denied this login (code ${code}): ask them, or run \`tunnel login\` again`);
          throw e;
        });
        if (r.body.state === 'approved' && r.body.sealedCredential) {
          const credential = openSealed(keys.secretKey, r.body.sealedCredential).toString('utf8');
          const claims = peekClaims(credential);
          saveCert({ accountId: String(claims?.accountId ?? ''), accountName: String(claims?.accountName ?? ''), controlUrl: base, credential, ...caFileField(), ...learned });
          return;
        }
        if (Date.now() > expiresAt + 5_000) throw new ControlError(410, 'login_expired', `login code ${code} expired: run \`tunnel login\` again`);
        await sleep(every);
      }
    });

  program
    .command('logout')
    .description('revoke the account credential (fleet-wide) and remove TUNNEL_HOME/cert.json; tunnel credentials files stay')
    .action(async () => {
      if (!existsSync(certPath())) return out(`Not logged in: no ${certPath()}`);
      const cert = readCert();
      try {
        await api(cert.controlUrl, 'POST', '/v1/account/logout', { auth: cert.credential });
      } catch (e) {
        // Already revoked or expired: nothing left to revoke. Unreachable: say so, and still log out here.
        const c = e instanceof ControlError ? e.code : '';
        if (!['credential_revoked', 'credential_expired'].includes(c)) err(`note: could not revoke the credential on ${cert.controlUrl} (${(e as Error).message}); it stays valid until it expires or an operator revokes it`);
      }
      unlinkSync(certPath());
      out(`Logged out of account ${cert.accountName}: removed ${certPath()}`);
    });

  program
    .command('create <name>')
    .description('create a named tunnel and write its credentials file to TUNNEL_HOME')
    .addOption(outputOpt())
    .action(async (name: string, o: { output: string }) => {
      const cert = readCert();
      const r = await api<{ tunnel: TunnelRecord; credentials: TunnelCredentialsFile }>(cert.controlUrl, 'POST', '/v1/tunnels', { auth: cert.credential, body: { name } });
      const path = credentialsFileFor(r.body.tunnel?.id);
      if (r.body.credentials?.tunnelId !== r.body.tunnel.id) throw new UnsafeIdError(`the control API answered with credentials for tunnel ${JSON.stringify(String(r.body.credentials?.tunnelId).slice(0, 80))}, not for the tunnel it created (${r.body.tunnel.id}); nothing was written`);
      writeSecretFile(path, r.body.credentials);
      if (o.output === 'json') return out(JSON.stringify({ ...r.body.tunnel, credentialsFile: path }));
      out(`Tunnel credentials written to ${path}. Keep this file secret.`);
      out(`Created tunnel ${name} with id ${r.body.tunnel.id}`);
    });

  program
    .command('list')
    .description('list your tunnels')
    .addOption(outputOpt())
    .action(async (o: { output: string }) => {
      const cert = readCert();
      const r = await api<{ tunnels: TunnelRecord[] }>(cert.controlUrl, 'GET', '/v1/tunnels', { auth: cert.credential });
      if (o.output === 'json') return out(JSON.stringify(r.body.tunnels));
      if (r.body.tunnels.length === 0) return out('No tunnels yet: `tunnel create NAME`');
      out(table([['ID', 'NAME', 'CREATED', 'CONNECTIONS'], ...r.body.tunnels.map((t) => [t.id, t.name, new Date(t.createdAt).toISOString(), String(t.connections ?? 0)])]));
    });

  program
    .command('info <name>')
    .description('show a tunnel: its routes, connectors and their connections')
    .addOption(outputOpt())
    .action(async (name: string, o: { output: string }) => {
      const cert = readCert();
      const r = await api<{ tunnel: TunnelRecord; routes: RouteRecord[]; connectors: ConnectorRecord[] }>(cert.controlUrl, 'GET', `/v1/tunnels/${encodeURIComponent(name)}`, { auth: cert.credential });
      if (o.output === 'json') return out(JSON.stringify(r.body));
      const { tunnel, routes, connectors } = r.body;
      out(`NAME:     ${tunnel.name}\nID:       ${tunnel.id}\nCREATED:  ${new Date(tunnel.createdAt).toISOString()}`);
      out(`ROUTES:   ${routes.length ? routes.map((x) => x.hostname).join(', ') : '(none: `tunnel route dns NAME HOSTNAME`)'}`);
      if (connectors.length === 0) return out('CONNECTORS: none connected');
      const rows = [['CONNECTOR ID', 'CONN', 'RELAY', 'AGE', 'VERSION', 'ORIGIN IP']];
      for (const c of connectors) for (const k of c.connections) rows.push([c.connectorId, String(k.connIndex), k.relayId, age(k.connectedAt), c.version, c.clientIp]);
      out(table(rows));
    });

  program
    .command('delete <name>')
    .description('delete a tunnel (refused while connectors are connected unless --force)')
    .option('-f, --force', 'delete even with connectors connected (they are disconnected)')
    .action(async (name: string, o: { force?: boolean }) => {
      const cert = readCert();
      const r = await api<{ deleted: string }>(cert.controlUrl, 'DELETE', `/v1/tunnels/${encodeURIComponent(name)}${o.force ? '?force=true' : ''}`, { auth: cert.credential });
      const local = credentialsFileFor(r.body.deleted);
      if (existsSync(local)) unlinkSync(local);
      out(`Deleted tunnel ${name} (${r.body.deleted})`);
    });

  program
    .command('cleanup <name>')
    .description('drop stale connection records of a tunnel (held for relays that died)')
    .action(async (name: string) => {
      const cert = readCert();
      const r = await api<{ removed: number }>(cert.controlUrl, 'POST', `/v1/tunnels/${encodeURIComponent(name)}/cleanup`, { auth: cert.credential });
      out(`Removed ${r.body.removed} stale connection record(s) of ${name}`);
    });

  program
    .command('token <name>')
    .description('print the tunnel\'s run token (one string `tunnel run --token` accepts alone); --rotate replaces it')
    .option('--rotate', 'issue a new token, rewrite the credentials file (and --token-file), and revoke the old token after --grace')
    .option('--grace <duration>', 'with --rotate: how long the old token keeps working (running connectors move over meanwhile)', '24h')
    .option('--token-file <file>', 'with --rotate: the token file a connector runs from (its token is the one retired; the new one is written there)')
    .action(async (name: string, o: { rotate?: boolean; grace: string; tokenFile?: string }) => {
      const cert = readCert();
      if (!o.rotate) {
        const r = await api<TunnelCredentialsFile>(cert.controlUrl, 'GET', `/v1/tunnels/${encodeURIComponent(name)}/token`, { auth: cert.credential });
        return out(r.body.token);
      }
      let graceMs: number;
      try {
        graceMs = parseDuration(o.grace);
      } catch (e) {
        throw new ControlError(0, 'bad_grace', `--grace: ${(e as Error).message}`);
      }
      const credentialsPath = findCredentialsByName(name);
      const old = o.tokenFile ? resolveToken({ tokenFile: o.tokenFile }).token : credentialsPath ? resolveToken({ credentialsFile: credentialsPath }).token : undefined;
      if (!old) err(`note: no credentials file for ${name} in ${tunnelHome()} and no --token-file: a new token is issued, but no old one is revoked`);
      const r = await api<{ credentials: TunnelCredentialsFile; retired: { tokenId: string; revokesAt: number } | null }>(
        cert.controlUrl,
        'POST',
        `/v1/tunnels/${encodeURIComponent(name)}/rotate`,
        { auth: cert.credential, body: { ...(old ? { token: old } : {}), graceSeconds: Math.round(graceMs / 1000) } },
      );
      const path = credentialsPath ?? credentialsFileFor(r.body.credentials?.tunnelId);
      writeSecretFile(path, r.body.credentials);
      if (o.tokenFile) writeSecretText(o.tokenFile, r.body.credentials.token + '\n');
      out(`New token for ${name} written to ${o.tokenFile ? `${o.tokenFile} and ` : ''}${path}; running connectors pick it up without a restart.`);
      if (r.body.retired) out(`The old token (${r.body.retired.tokenId}) stops working at ${new Date(r.body.retired.revokesAt).toISOString()}.`);
    });

  const zone = program.command('zone').description('zones: the DNS names your account may route');
  zone
    .command('list')
    .description('list the zones your account holds')
    .addOption(outputOpt())
    .action(async (o: { output: string }) => {
      const cert = readCert();
      const r = await api<{ zones: Array<{ zone: string; source: string; createdAt: number }> }>(cert.controlUrl, 'GET', '/v1/zones', { auth: cert.credential });
      if (o.output === 'json') return out(JSON.stringify(r.body.zones));
      if (r.body.zones.length === 0) return out('No zones yet: ask the operator, or `tunnel zone claim ZONE`');
      out(table([['ZONE', 'SOURCE', 'GRANTED'], ...r.body.zones.map((z) => [z.zone, z.source, new Date(z.createdAt).toISOString()])]));
    });
  zone
    .command('claim <zone>')
    .description('claim ZONE by proving DNS control: prints the TXT record to publish; with --verify, asks the relay to check it and grant the zone')
    .option('--verify', 'the TXT record is published: check it now')
    .action(async (name: string, o: { verify?: boolean }) => {
      const cert = readCert();
      if (!o.verify) {
        const r = await api<{ zone: string; record: string; value: string }>(cert.controlUrl, 'POST', '/v1/zones/claims', { auth: cert.credential, body: { zone: name } });
        out(`To claim ${r.body.zone}, publish this DNS record:`);
        out(`  ${r.body.record}  TXT  "${r.body.value}"`);
        out(`then run: tunnel zone claim ${r.body.zone} --verify`);
        return;
      }
      const r = await api<{ zone: { zone: string } }>(cert.controlUrl, 'POST', '/v1/zones/claims/verify', { auth: cert.credential, body: { zone: name } });
      out(`Zone ${r.body.zone.zone} is now held by your account: route names under it with \`tunnel route dns NAME HOSTNAME\``);
    });

  const route = program.command('route').description('route hostnames to tunnels');
  route
    .command('dns <name> <hostname>')
    .description('route HOSTNAME (exact or *.domain) to tunnel NAME')
    .action(async (name: string, hostname: string) => {
      const cert = readCert();
      const r = await api<{ route: RouteRecord }>(cert.controlUrl, 'POST', '/v1/routes', { auth: cert.credential, body: { hostname, tunnel: name } });
      out(`Added route ${r.body.route.hostname} → tunnel ${name} (${r.body.route.tunnelId})`);
    });
  route
    .command('list')
    .description('list your routes')
    .addOption(outputOpt())
    .action(async (o: { output: string }) => {
      const cert = readCert();
      const r = await api<{ routes: RouteRecord[] }>(cert.controlUrl, 'GET', '/v1/routes', { auth: cert.credential });
      const t = await api<{ tunnels: TunnelRecord[] }>(cert.controlUrl, 'GET', '/v1/tunnels', { auth: cert.credential });
      const names = new Map(t.body.tunnels.map((x) => [x.id, x.name]));
      const routes = r.body.routes.map((x) => ({ ...x, tunnelName: names.get(x.tunnelId) ?? null }));
      if (o.output === 'json') return out(JSON.stringify(routes));
      if (routes.length === 0) return out('No routes yet: `tunnel route dns NAME HOSTNAME`');
      out(table([['HOSTNAME', 'TUNNEL', 'TUNNEL ID', 'CREATED'], ...routes.map((x) => [x.hostname, x.tunnelName ?? '(deleted)', x.tunnelId, new Date(x.createdAt).toISOString()])]));
    });
  route
    .command('delete <hostname>')
    .description('remove the route for HOSTNAME')
    .action(async (hostname: string) => {
      const cert = readCert();
      await api(cert.controlUrl, 'DELETE', `/v1/routes/${encodeURIComponent(hostname)}`, { auth: cert.credential });
      out(`Deleted route ${hostname}`);
    });
}

/** Later commands (`tunnel create`, `tunnel run NAME`) talk to the same relays: keep the CA login used. */
function caFileField(): { caFile?: string } {
  return relayTrust.file ? { caFile: relayTrust.file } : {};
}

/** The fleet key a logged-in account is pinned to: the one its credential carries, else the one login learned. */
export function pinnedFleetKey(c: AccountCert): string | null {
  const k = peekClaims(c.credential)?.fleetKey;
  return typeof k === 'string' ? k : (c.relay?.fleetKey ?? null);
}

function saveCert(c: AccountCert): void {
  writeSecretFile(certPath(), c);
  out(`Logged in to account ${c.accountName}. Credential written to ${certPath()} (mode 0600).`);
}

/** `tunnel run NAME` without a local credentials file: fetch one with the account credential. */
export async function fetchCredentialsFor(name: string): Promise<string | undefined> {
  const local = findCredentialsByName(name);
  if (local) return local;
  if (!existsSync(certPath())) return undefined;
  const cert = readCert();
  const r = await api<TunnelCredentialsFile>(cert.controlUrl, 'GET', `/v1/tunnels/${encodeURIComponent(name)}/token`, { auth: cert.credential });
  const path = credentialsFileFor(r.body.tunnelId);
  writeSecretFile(path, r.body);
  return path;
}
