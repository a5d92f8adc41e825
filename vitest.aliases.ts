import { fileURLToPath } from 'node:url';

const src = (p: string) => fileURLToPath(new URL(`./packages/${p}/src/index.ts`, import.meta.url));

/** Unit tests import the workspace packages from source; one map for `npm test` and the mutation runs. */
export const workspaceAliases = {
  '@tunnel/protocol': src('protocol'),
  '@tunnel/host': src('host'),
  '@tunnel/relay': src('relay'),
  '@tunnel/connector': src('connector'),
};
