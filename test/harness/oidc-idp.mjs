// A real OpenID Connect provider (oidc-provider) for the Access tests, run as
// its own process on 127.0.0.1: `node oidc-idp.mjs` with IDP_CONFIG (JSON):
//   { port, clients: [{ client_id, client_secret, redirect_uris }], users: { login: { email, email_verified, groups } } }
// Its development login page accepts any password for a listed login.
// Prints one JSON line {"event":"listening","port":N} when it is up.

import http from 'node:http';
import Provider from 'oidc-provider';

const cfg = JSON.parse(process.env.IDP_CONFIG ?? '{}');
const server = http.createServer();
await new Promise((r) => server.listen(cfg.port ?? 0, '127.0.0.1', r));
const port = server.address().port;
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: cfg.clients.map((c) => ({ grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'client_secret_post', ...c })),
  async findAccount(_ctx, id) {
    const user = cfg.users[id];
    if (!user) return undefined;
    const { manyGroups, ...claims } = user;
    if (manyGroups) claims.groups = Array.from({ length: manyGroups }, (_, i) => `group-${i}-${'x'.repeat(24)}`);
    return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['groups'] },
  // The claims asked for by scope go into the id_token itself (the relay reads them there).
  conformIdTokenClaims: false,
  cookies: { keys: ['idp-test-cookie-key'] },
  features: { devInteractions: { enabled: true } },
  // The dev login page would load a web font: nothing of it may leave 127.0.0.1.
  async renderError(ctx, out) {
    ctx.type = 'text/plain';
    ctx.body = `idp error: ${out.error}: ${out.error_description ?? ''}`;
  },
});
provider.proxy = false;
// Unknown logins are refused at the login form (dev interactions accept any name otherwise).
provider.on('server_error', (_ctx, err) => process.stderr.write(`idp server_error: ${err.message}\n`));
server.on('request', provider.callback());
process.stdout.write(JSON.stringify({ event: 'listening', port, issuer }) + '\n');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
