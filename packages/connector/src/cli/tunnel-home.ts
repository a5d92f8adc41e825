import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, relative, isAbsolute } from 'node:path';

/** Tunnel ids are the relay's random UUIDs; nothing else may name a file. */
const TUNNEL_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A tunnel id from the control API that is not one (`../../x`, `/etc/passwd`, …). */
export class UnsafeIdError extends Error {}

/**
 * TUNNEL_HOME/<id>.json for an id the control API sent. The id is checked
 * against the id grammar before it touches a path, so a hostile or broken
 * server cannot make the CLI write or unlink a file outside TUNNEL_HOME.
 */
export function credentialsFileFor(id: unknown): string {
  if (typeof id !== 'string' || !TUNNEL_ID.test(id)) {
    const shown = typeof id === 'string' ? JSON.stringify(id.slice(0, 80)) : typeof id;
    throw new UnsafeIdError(`the control API answered with tunnel id ${shown}, which is not a tunnel id (a UUID): refusing to use it as a file name; nothing was written or removed`);
  }
  const home = tunnelHome();
  const file = join(home, `${id.toLowerCase()}.json`);
  const rel = relative(home, file);
  if (rel.startsWith('..') || isAbsolute(rel)) throw new UnsafeIdError(`tunnel id ${JSON.stringify(id)} points outside ${home}`);
  return file;
}

/** `~/.tunnel`, or TUNNEL_HOME (tests point it at a temporary directory). */
export function tunnelHome(): string {
  return process.env.TUNNEL_HOME || join(homedir(), '.tunnel');
}

/** The credentials file of the tunnel called `name` (or with that id). */
export function findCredentialsByName(name: string): string | undefined {
  const home = tunnelHome();
  let files: string[];
  try {
    files = readdirSync(home).filter((f) => f.endsWith('.json') && f !== 'cert.json');
  } catch {
    return undefined;
  }
  for (const f of files) {
    const path = join(home, f);
    try {
      const v = JSON.parse(readFileSync(path, 'utf8')) as { tunnelName?: string; tunnelId?: string };
      if (v.tunnelName === name || v.tunnelId === name) return path;
    } catch {
      /* not a credentials file */
    }
  }
  return undefined;
}

/**
 * The config file to use when none is named, as cloudflared searches its
 * directories: ./config.yml, TUNNEL_HOME (~/.tunnel), then /etc/tunnel.
 */
export function defaultConfigPath(): string | undefined {
  for (const dir of [process.cwd(), tunnelHome(), '/etc/tunnel']) {
    for (const name of ['config.yml', 'config.yaml']) {
      const p = join(dir, name);
      if (existsSync(p)) return p;
    }
  }
  return undefined;
}
