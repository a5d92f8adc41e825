import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { exactHostname } from '@tunnel/protocol';
import { tunnelHome } from '../cli/tunnel-home.js';
import { writeSecretText } from '../ha/control-client.js';

/**
 * `tunnel access login`, as `cloudflared access login`: the browser logs in
 * at the hostname's identity provider once, and the relay hands the session
 * to a callback this command serves on 127.0.0.1; the token is kept in
 * TUNNEL_HOME/access/HOSTNAME.token (0600) for `tunnel access tcp`.
 */

export class AccessLoginError extends Error {}

/**
 * The token file of a hostname; the name is checked before it touches a path,
 * by the system's one hostname grammar (so a route the relay serves, `_`
 * included, has a token file), and must be an exact name: no `*`, no `/`, no
 * `..` label can reach the file system.
 */
export function tokenPath(hostname: string): string {
  const h = exactHostname(hostname);
  if (h === undefined) throw new AccessLoginError(`not a hostname: ${JSON.stringify(hostname.slice(0, 80))}`);
  return join(tunnelHome(), 'access', `${h}.token`);
}

export function cachedToken(hostname: string): string | undefined {
  try {
    const t = readFileSync(tokenPath(hostname), 'utf8').trim();
    return t || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Runs the browser login and resolves with the token. `publicUrl` is how the
 * browser reaches the hostname (https://HOSTNAME, or a relay's port for it).
 */
export async function browserLogin(hostname: string, publicUrl: URL, o: { timeoutMs?: number; tell: (line: string) => void }): Promise<string> {
  const state = randomBytes(18).toString('base64url');
  let settle!: { ok: (t: string) => void; fail: (e: Error) => void };
  const done = new Promise<string>((ok, fail) => (settle = { ok, fail }));
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1');
    const token = u.searchParams.get('token');
    if (u.pathname !== '/' || u.searchParams.get('state') !== state || !token || token.length > 4096) {
      res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' });
      return void res.end('This is not the login this command started.\n');
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', connection: 'close' });
    res.end(`<!doctype html><meta charset="utf-8"><title>Logged in</title><h1>Logged in</h1><p>tunnel access is logged in to ${hostname}; you may close this window.</p>`);
    settle.ok(token);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const page = new URL('/.tunnel/access/cli', `${publicUrl.protocol}//${hostname}${publicUrl.port ? `:${publicUrl.port}` : ''}`);
  page.searchParams.set('callback', `http://127.0.0.1:${port}/`);
  page.searchParams.set('state', state);
  o.tell(`To log in to ${hostname}, open this URL in a browser on this machine:\n  ${page.href}`);
  const timer = setTimeout(() => settle.fail(new AccessLoginError(`no login within ${Math.round((o.timeoutMs ?? 300_000) / 1000)} s: run \`tunnel access login --hostname ${hostname}\` again`)), o.timeoutMs ?? 300_000);
  try {
    const token = await done;
    mkdirSync(join(tunnelHome(), 'access'), { recursive: true, mode: 0o700 });
    writeSecretText(tokenPath(hostname), token + '\n');
    return token;
  } finally {
    clearTimeout(timer);
    server.closeAllConnections();
    server.close();
  }
}
