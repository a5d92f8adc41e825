import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

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
