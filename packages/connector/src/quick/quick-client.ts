// The connector's side of the quick-tunnel control API (relay quick/quick-routes.ts).

import { z } from 'zod';
import { exactHostname } from '@tunnel/protocol';
import { api, ControlError } from '../ha/control-client.js';

const GrantSchema = z.object({
  // The system's one hostname grammar, exact names only: the relay's answer names what this process serves.
  hostname: z.string().refine((h) => exactHostname(h) === h, 'hostname'),
  url: z.string().regex(/^https?:\/\/[a-z0-9_.-]+(:\d{1,5})?$/, 'url'),
  tunnelId: z.string().min(1).max(64),
  token: z.string().min(10).max(16_384),
  expiresAt: z.number().int().positive(),
  relays: z.array(z.string().regex(/^wss?:\/\//, 'relay URL')).max(256),
  controlUrl: z.string().max(2048),
  fleetKey: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'fleet key'),
});

/** What a relay grants: a hostname, the token bound to it, and where to connect. */
export type QuickGrant = z.infer<typeof GrantSchema>;

/** The relay's answer is checked like any input: it decides where this process connects. */
export function grant(body: unknown, from: string): QuickGrant {
  const r = GrantSchema.safeParse(body);
  if (!r.success) throw new ControlError(0, 'bad_response', `${from} answered a quick tunnel that does not parse (${r.error.issues[0]?.path.join('.') ?? 'body'}): is it a relay control API?`);
  return r.data;
}

export async function createQuick(controlUrl: string, connectorId: string): Promise<QuickGrant> {
  const r = await api<unknown>(controlUrl, 'POST', '/v1/quick', { body: { connectorId } });
  return grant(r.body, controlUrl);
}

export async function renewQuick(controlUrl: string, token: string): Promise<QuickGrant> {
  const r = await api<unknown>(controlUrl, 'POST', '/v1/quick/renew', { auth: token });
  return grant(r.body, controlUrl);
}

export async function removeQuick(controlUrl: string, token: string): Promise<void> {
  await api<unknown>(controlUrl, 'DELETE', '/v1/quick', { auth: token });
}
