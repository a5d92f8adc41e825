import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { Command } from 'commander';
import { TCP_UPGRADE } from '../origin/tcp-bridge.js';
import { registerAccessManagement } from '../access/access-commands.js';
import { describeRelay } from '../ha/relay-lookup.js';
import { browserLogin, cachedToken, tokenPath } from '../access/access-login.js';
import { parseDuration } from '@tunnel/protocol';

/**
 * `tunnel access tcp`: the client end of a `tcp://` ingress rule, as
 * `cloudflared access tcp` is. Each local connection (or stdin/stdout, for
 * an SSH ProxyCommand) becomes one HTTP upgrade to the public hostname on a
 * relay; after the 101 the bytes flow raw to the origin's TCP service.
 */

export class AccessError extends Error {}

/**
 * Where to send the upgrade: the hostname itself (its DNS points at the
 * relays), or the public listener of the relay named by --relay (any of its
 * URLs: its /.well-known/tunnel-relay says where the public listener is).
 */
export async function accessTarget(hostname: string, relay?: string): Promise<URL> {
  if (!relay) return new URL(`https://${hostname}`);
  const described = await describeRelay(relay);
  if (!described.public) throw new AccessError(`the relay at ${relay} (${described.relayId}) has no public listener: name another relay with --relay`);
  return new URL(described.public);
}

/** Open one raw TCP stream to the origin behind `hostname`; rejects with the relay's or connector's reason. */
export function openTcpStream(hostname: string, target: URL, timeoutMs = 30_000, credentials: Record<string, string> = {}): Promise<Duplex> {
  const tls = target.protocol === 'https:';
  const opts: https.RequestOptions = {
    host: target.hostname,
    port: target.port || (tls ? 443 : 80),
    path: '/',
    method: 'GET',
    agent: false,
    headers: { Host: hostname, Connection: 'Upgrade', Upgrade: TCP_UPGRADE, ...credentials },
    timeout: timeoutMs,
    ...(tls ? { servername: net.isIP(hostname) ? undefined : hostname } : {}),
  };
  return new Promise((resolve, reject) => {
    const req = (tls ? https : http).request(opts);
    req.on('upgrade', (_res, socket, rest: Buffer) => {
      req.setTimeout(0);
      socket.setTimeout(0);
      socket.setNoDelay(true);
      if (rest.length > 0) socket.unshift(rest);
      resolve(socket);
    });
    req.on('response', (res) => {
      // Not upgraded: the relay or connector says why (Tunnel-Error and a short body).
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        if (size < 4096) chunks.push(c);
        size += c.length;
      });
      res.on('end', () => reject(new AccessError(describeRefusal(res.statusCode ?? 0, res.headers, Buffer.concat(chunks).toString('utf8')))));
      res.on('error', (e) => reject(new AccessError(`${res.statusCode} from ${target.host}, then ${e.message}`)));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${target.host} within ${timeoutMs} ms`)));
    req.on('error', (e) => reject(new AccessError(`cannot reach ${target.host}: ${e.message}`)));
    req.end();
  });
}

function describeRefusal(status: number, headers: http.IncomingHttpHeaders, body: string): string {
  const code = headers['tunnel-error'];
  const source = headers['tunnel-error-source'];
  let message = '';
  try {
    const j = JSON.parse(body) as { message?: unknown; error?: { message?: unknown } };
    const m = j.message ?? j.error?.message;
    if (typeof m === 'string') message = m;
  } catch {
    message = body.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);
  }
  const who = code ? ` ${code}${source ? ` (from the ${source})` : ''}` : '';
  return `refused: ${status}${who}${message ? `: ${message}` : ''}`;
}

/** Join a local duplex to a tunnel stream; resolves when both directions are done. */
function join(local: Duplex, remote: Duplex): Promise<void> {
  return new Promise((resolve) => {
    let open = 2;
    const done = () => {
      if (--open === 0) resolve();
    };
    local.pipe(remote);
    remote.pipe(local);
    // A reset on either side resets the other: a cut stream must not look complete.
    local.on('error', (e) => remote.destroy(e));
    remote.on('error', (e) => local.destroy(e));
    local.on('close', () => {
      if (!remote.destroyed && !local.readableEnded) remote.destroy();
      done();
    });
    remote.on('close', () => {
      if (!local.destroyed && !remote.readableEnded) local.destroy();
      done();
    });
  });
}

export function registerAccessCommands(program: Command): void {
  const access = program.command('access').description('reach a service published through a tunnel from this machine, and manage who may (Access)');
  registerAccessManagement(access);
  access
    .command('login')
    .description("log in to an Access-protected hostname in a browser once; `tunnel access tcp` then uses the saved token")
    .requiredOption('--hostname <host>', 'the protected hostname')
    .option('--relay <url>', 'log in through this relay: any of its URLs (default: https://HOSTNAME)')
    .option('--timeout <duration>', 'how long to wait for the browser', '5m')
    .action(async (o: { hostname: string; relay?: string; timeout: string }) => {
      const target = await accessTarget(o.hostname, o.relay);
      await browserLogin(o.hostname.toLowerCase(), target, { timeoutMs: parseDuration(o.timeout), tell: (l) => void process.stderr.write(l + '\n') });
      process.stderr.write(`tunnel: logged in to ${o.hostname}; the token is in ${tokenPath(o.hostname)}\n`);
    });
  access
    .command('tcp')
    .description('carry a TCP connection to a hostname whose ingress rule is tcp://host:port (e.g. SSH)')
    .requiredOption('--hostname <host>', 'public hostname routed to the tunnel')
    .option('--url <addr>', 'listen on this local address (host:port) and carry each connection; without it, stdin/stdout (for ssh -o ProxyCommand)')
    .option('--relay <url>', 'connect through this relay: any of its URLs (default: https://HOSTNAME)')
    .option('--service-token-id <id>', 'an Access service token (or TUNNEL_SERVICE_TOKEN_ID); default: the token of `tunnel access login`')
    .option('--service-token-secret <secret>', 'its secret (or TUNNEL_SERVICE_TOKEN_SECRET)')
    .action(async (o: { hostname: string; url?: string; relay?: string; serviceTokenId?: string; serviceTokenSecret?: string }) => {
      const target = await accessTarget(o.hostname, o.relay);
      const credentials = accessCredentials(o);
      const openTcpStream = (h: string, t: URL) => openAccessStream(h, t, credentials);
      if (!o.url) {
        // stdin/stdout: one stream, and the exit code says whether it ended cleanly.
        const remote = await openTcpStream(o.hostname, target);
        let failure: Error | undefined;
        remote.on('error', (e) => (failure = e));
        process.stdin.pipe(remote); // our EOF half-closes the stream; the origin may still answer
        remote.pipe(process.stdout);
        await new Promise((r) => remote.once('close', r));
        if (failure) throw new AccessError(`the connection to ${o.hostname} was cut: ${failure.message}`);
        await new Promise<void>((r) => process.stdout.write('', () => r()));
        process.exit(0);
      }
      const [host, port] = splitHostPort(o.url);
      const server = net.createServer({ allowHalfOpen: true }, (local) => {
        local.on('error', () => {});
        openTcpStream(o.hostname, target).then(
          (remote) => void join(local, remote),
          (e: Error) => {
            process.stderr.write(`tunnel: ${o.hostname}: ${e.message}\n`);
            local.destroy();
          },
        );
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', (e) => reject(new AccessError(`cannot listen on ${o.url}: ${e.message}`)));
        server.listen(port, host, () => resolve());
      });
      const a = server.address() as net.AddressInfo;
      process.stderr.write(`tunnel: listening on ${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port} for ${o.hostname} (via ${target.host})\n`);
      const stop = () => {
        server.close();
        process.exit(0);
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      await new Promise<never>(() => {}); // serve until a signal
    });
}

/** What proves who we are to an Access policy: a service token, else the token `tunnel access login` saved. */
function accessCredentials(o: { hostname: string; serviceTokenId?: string; serviceTokenSecret?: string }): Record<string, string> {
  const id = o.serviceTokenId ?? process.env.TUNNEL_SERVICE_TOKEN_ID;
  const secret = o.serviceTokenSecret ?? process.env.TUNNEL_SERVICE_TOKEN_SECRET;
  if (id || secret) {
    if (!id || !secret) throw new AccessError('a service token needs both --service-token-id and --service-token-secret');
    return { 'Tunnel-Access-Client-Id': id, 'Tunnel-Access-Client-Secret': secret };
  }
  const token = cachedToken(o.hostname);
  return token ? { Cookie: `tunnel_access=${token}` } : {};
}

/** openTcpStream, with the way out named when Access wants a login. */
async function openAccessStream(hostname: string, target: URL, credentials: Record<string, string>): Promise<Duplex> {
  try {
    return await openTcpStream(hostname, target, 30_000, credentials);
  } catch (e) {
    if (e instanceof AccessError && /access_login_required|access_denied/.test(e.message)) {
      throw new AccessError(`${e.message} (log in with \`tunnel access login --hostname ${hostname}\`, or pass a service token)`);
    }
    throw e;
  }
}

function splitHostPort(addr: string): [string, number] {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(addr.replace(/^tcp:\/\//, ''));
  if (!m) throw new AccessError(`--url must be host:port (e.g. 127.0.0.1:2222), not ${addr}`);
  const port = Number(m[3]);
  if (port > 65535) throw new AccessError(`--url port out of range: ${addr}`);
  return [m[1] ?? (m[2] || '127.0.0.1'), port];
}
