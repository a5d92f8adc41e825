// The native yardstick of `npm run bench` (DESIGN §10): two chained nginx
// reverse proxies, one process each, keepalive upstreams — what relay +
// connector would cost if written in C. The bench writes the config into its
// temp directory, starts each nginx by PID in the foreground and stops it by
// that PID; without an nginx binary the row is skipped with the reason.

import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import * as path from 'node:path';
import { Child, freePort, waitUntil } from './common.js';

export interface NginxChain {
  /** Where clients connect: the first nginx (the relay's stand-in). */
  port: number;
  front: Child;
  /** The second nginx (the connector's stand-in), in front of the origin. */
  back: Child;
  stop(): Promise<void>;
}

/** The nginx binary, or why there is none (the bench prints the reason and skips the row). */
export function findNginx(): { bin: string } | { missing: string } {
  const bin = process.env.BENCH_NGINX ?? 'nginx';
  const r = spawnSync(bin, ['-v'], { stdio: 'ignore' });
  if (r.error) return { missing: `no ${bin} binary (${(r.error as NodeJS.ErrnoException).code ?? r.error.message}); install nginx for the native yardstick` };
  return { bin };
}

/**
 * One nginx process (master_process off: the master is the worker, so its
 * PID's CPU is all the proxy's CPU) forwarding 127.0.0.1:listen to
 * 127.0.0.1:upstream over up to 64 idle keepalive connections, streaming
 * both ways (no request or response buffering, as relay and connector do).
 */
function config(dir: string, listen: number, upstream: number): string {
  const p = (f: string) => path.join(dir, f);
  return `
daemon off;
master_process off;
worker_processes 1;
pid ${p('nginx.pid')};
error_log ${p('error.log')} warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${p('client_body')};
  proxy_temp_path ${p('proxy')};
  fastcgi_temp_path ${p('fastcgi')};
  uwsgi_temp_path ${p('uwsgi')};
  scgi_temp_path ${p('scgi')};
  keepalive_requests 1000000;
  keepalive_timeout 65s;
  client_max_body_size 0;
  upstream next { server 127.0.0.1:${upstream}; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${listen} reuseport;
    location / {
      proxy_pass http://next;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
`;
}

async function startOne(bin: string, dir: string, name: string, listen: number, upstream: number): Promise<Child> {
  mkdirSync(dir, { recursive: true });
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(conf, config(dir, listen, upstream));
  const c = new Child(name, bin, ['-p', dir, '-c', conf, '-e', path.join(dir, 'error.log')]);
  await waitUntil(
    () =>
      new Promise<boolean>((resolve) => {
        if (!c.running) return resolve(true);
        const s = net.connect(listen, '127.0.0.1');
        s.once('connect', () => (s.destroy(), resolve(true)));
        s.once('error', () => resolve(false));
      }),
    10_000,
    `${name} listening on :${listen}`,
  );
  if (!c.running) throw new Error(`${name} exited: ${c.stderr}`);
  return c;
}

/** client → front (:port) → back → origin, each nginx in its own process. */
export async function startNginxChain(bin: string, tmp: string, originPort: number): Promise<NginxChain> {
  const [frontPort, backPort] = [await freePort(), await freePort()];
  const back = await startOne(bin, path.join(tmp, 'nginx-back'), 'nginx-back', backPort, originPort);
  let front: Child;
  try {
    front = await startOne(bin, path.join(tmp, 'nginx-front'), 'nginx-front', frontPort, backPort);
  } catch (e) {
    await back.stop(3_000);
    throw e;
  }
  return {
    port: frontPort,
    front,
    back,
    // SIGTERM is nginx's fast shutdown; each by its PID.
    stop: async () => {
      await front.stop(3_000);
      await back.stop(3_000);
    },
  };
}
