// Which relay a bare `tunnel --url` asks: --relay, then --quick-relay /
// TUNNEL_QUICK_RELAY, then `quick-relay:` in TUNNEL_HOME/quick.yml (read only:
// quick tunnels write nothing there).

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError, closestKey, describeIssues, parseYamlConfig, readConfigText } from '@tunnel/host';
import { tunnelHome } from '../cli/tunnel-home.js';

export function quickConfigPath(): string {
  return join(tunnelHome(), 'quick.yml');
}

/** What is wrong with a relay's control URL as given (http(s), no path beyond `/`), or its origin. */
function relayUrl(raw: string): { readonly origin: string } | { readonly problem: string } {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return { problem: `${JSON.stringify(raw)} is not a URL (expected the relay's https://HOST[:PORT])` };
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') {
    const hint = u.protocol === 'wss:' || u.protocol === 'ws:' ? ': a quick tunnel asks the relay\'s control API (https://…), not its connector endpoint' : '';
    return { problem: `${raw}: expected an http(s):// relay URL${hint}` };
  }
  return { origin: u.origin };
}

/** A relay's control URL as given, checked: http(s), no path beyond `/`. */
export function checkRelayUrl(raw: string, where: string): string {
  const r = relayUrl(raw);
  if ('problem' in r) throw new ConfigError(where, [{ line: 0, column: 0, message: r.problem }]);
  return r.origin;
}

// quick.yml takes one key; read with the config toolkit config.yml and relay.yml use, so its errors name file:line:column alike.
const quickFileSchema = z.strictObject({
  'quick-relay': z
    .string()
    .transform((v, ctx) => {
      const r = relayUrl(v);
      if ('origin' in r) return r.origin;
      ctx.addIssue({ code: 'custom', message: r.problem });
      return z.NEVER;
    })
    .optional(),
});

/** The `quick-relay:` of TUNNEL_HOME/quick.yml, if the file exists. Errors name file:line. */
function fromFile(): string | undefined {
  const file = quickConfigPath();
  if (!existsSync(file)) return undefined;
  const yaml = parseYamlConfig(readConfigText(file), file);
  const r = quickFileSchema.safeParse(yaml.raw);
  if (!r.success) {
    throw yaml.error(
      describeIssues(r.error.issues, yaml.raw, {
        topKeys: 'quick-relay: URL',
        suggest: (key) => (closestKey(key, ['quick-relay']) ? ' (did you mean "quick-relay"?)' : ' (this file takes only quick-relay: URL)'),
      }),
    );
  }
  return r.data['quick-relay'];
}

export function resolveQuickRelay(o: { relay?: string; quickRelay?: string }): string | undefined {
  if (o.relay) return checkRelayUrl(o.relay, '--relay');
  if (o.quickRelay) return checkRelayUrl(o.quickRelay, '--quick-relay (or TUNNEL_QUICK_RELAY)');
  return fromFile();
}
