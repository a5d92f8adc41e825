import { afterAll, beforeAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Points TUNNEL_HOME at a fresh temporary directory for the calling file's tests; returns a getter for it. */
export function useTempTunnelHome(prefix: string): () => string {
  let home = '';
  let saved: string | undefined;
  beforeAll(() => {
    home = mkdtempSync(join(tmpdir(), prefix));
    saved = process.env.TUNNEL_HOME;
    process.env.TUNNEL_HOME = home;
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.TUNNEL_HOME;
    else process.env.TUNNEL_HOME = saved;
    rmSync(home, { recursive: true, force: true });
  });
  return () => home;
}
