// The Redis store's Lua scripts: every multi-key change is one script that
// also PUBLISHes, so messages arrive in the order the changes were made.

import { createHash } from 'node:crypto';

// --- Lua --------------------------------------------------------------------

/**
 * Each revocation drops a bounded batch of records whose token expired
 * before `cutoff` (revocation-expiry indexes them by expiry), announcing
 * each as removed (empty record), so the hash stays as large as the
 * revocations that still matter without a scan. Records written before the
 * index existed are dropped when a relay re-reads the store (warm).
 */
function pruneRevocations(channel: string, cutoff: string): string {
  return `for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ${cutoff}, 'LIMIT', 0, 64)) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('PUBLISH', ${channel}, 'revoked\\n' .. id .. '\\n')
end`;
}

export const LUA = {
  // KEYS: accounts, account-names. ARGV: id, name, json, channel
  createAccount: `
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[1]) == 0 then return {'CONFLICT', ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], 'account\\n' .. ARGV[1] .. '\\n' .. ARGV[3])
return {'OK', ARGV[3]}`,
  // KEYS: accounts, tunnels, tunnel-names. ARGV: accountId, id, nameKey, json, channel
  createTunnel: `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {'NOT_FOUND', ''} end
if redis.call('HSETNX', KEYS[3], ARGV[3], ARGV[2]) == 0 then return {'CONFLICT', ''} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], 'tunnel\\n' .. ARGV[2] .. '\\n' .. ARGV[4])
return {'OK', ARGV[4]}`,
  // Compare-and-set of a tunnel record (an operator disconnect). KEYS: tunnels. ARGV: id, old json, new json, channel
  casTunnel: `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {'NOT_FOUND', ''} end
if cur ~= ARGV[2] then return {'CHANGED', cur} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], 'tunnel\\n' .. ARGV[1] .. '\\n' .. ARGV[3])
return {'OK', ARGV[3]}`,
  // KEYS: tunnels, tunnel-names, routes, tunnel-routes:<id>, tombstone:<id>.
  // ARGV: id, channel, deletedAt, keepTombstoneMs, tombstones-of: key prefix.
  // The tombstone is a key of its own that Redis expires; tombstones-of:<accountId>
  // (member: tunnel id, score: expiry) counts them per account and expires with the last.
  deleteTunnel: `
local t = redis.call('HGET', KEYS[1], ARGV[1])
if not t then return {'NOT_FOUND', ''} end
local obj = cjson.decode(t)
local px = math.max(1, tonumber(ARGV[4]))
local exp = tonumber(ARGV[3]) + px
redis.call('SET', KEYS[5], '{"tunnelId":' .. cjson.encode(ARGV[1]) .. ',"accountId":' .. cjson.encode(obj.accountId) .. ',"name":' .. cjson.encode(obj.name) .. ',"deletedAt":' .. ARGV[3] .. ',"expiresAt":' .. string.format('%d', exp) .. '}', 'PX', px)
local idx = ARGV[5] .. obj.accountId
redis.call('ZREMRANGEBYSCORE', idx, '-inf', ARGV[3])
redis.call('ZADD', idx, exp, ARGV[1])
if redis.call('PTTL', idx) < px then redis.call('PEXPIRE', idx, px) end
if redis.call('HGET', KEYS[2], obj.accountId .. '\\n' .. obj.name) == ARGV[1] then
  redis.call('HDEL', KEYS[2], obj.accountId .. '\\n' .. obj.name)
end
local hosts = redis.call('SMEMBERS', KEYS[4])
for _, h in ipairs(hosts) do
  local r = redis.call('HGET', KEYS[3], h)
  if r and cjson.decode(r).tunnelId == ARGV[1] then
    redis.call('HDEL', KEYS[3], h)
    redis.call('PUBLISH', ARGV[2], 'route\\n' .. h .. '\\n')
  end
end
redis.call('DEL', KEYS[4])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'tunnel-deleted\\n' .. ARGV[1] .. '\\n' .. t)
return {'OK', t}`,
  // KEYS: tunnels, routes, tunnel-routes:<tunnelId>. ARGV: tunnelId, accountId, hostname, json, channel
  addRoute: `
local t = redis.call('HGET', KEYS[1], ARGV[1])
if not t or cjson.decode(t).accountId ~= ARGV[2] then return {'NOT_FOUND', ''} end
local e = redis.call('HGET', KEYS[2], ARGV[3])
if e then
  local eo = cjson.decode(e)
  if eo.tunnelId == ARGV[1] then return {'EXISTS', e} end
  return {'CONFLICT', e}
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[5], 'route\\n' .. ARGV[3] .. '\\n' .. ARGV[4])
return {'OK', ARGV[4]}`,
  // KEYS: routes. ARGV: hostname, channel, tunnel-routes key prefix
  deleteRoute: `
local e = redis.call('HGET', KEYS[1], ARGV[1])
if not e then return {'NOT_FOUND', ''} end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', ARGV[3] .. cjson.decode(e).tunnelId, ARGV[1])
redis.call('PUBLISH', ARGV[2], 'route\\n' .. ARGV[1] .. '\\n')
return {'OK', e}`,
  // KEYS: accounts, zones. ARGV: zone, accountId, json, channel
  addZone: `
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return {'NOT_FOUND', ''} end
local e = redis.call('HGET', KEYS[2], ARGV[1])
if e then
  if cjson.decode(e).accountId == ARGV[2] then return {'EXISTS', e} end
  return {'CONFLICT', ''}
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], 'zone\\n' .. ARGV[1] .. '\\n' .. ARGV[3])
return {'OK', ARGV[3]}`,
  // KEYS: access. ARGV: key, json, channel
  putAccess: `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], 'access\\n' .. ARGV[1] .. '\\n' .. ARGV[2])
return {'OK', ''}`,
  // KEYS: access. ARGV: key, channel
  deleteAccess: `
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return {'NOT_FOUND', ''} end
redis.call('PUBLISH', ARGV[2], 'access\\n' .. ARGV[1] .. '\\n')
return {'OK', ''}`,
  // KEYS: zones. ARGV: zone, channel
  deleteZone: `
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return {'NOT_FOUND', ''} end
redis.call('PUBLISH', ARGV[2], 'zone\\n' .. ARGV[1] .. '\\n')
return {'OK', ''}`,
  // KEYS: revocations, revocation-expiry. ARGV: tokenId, json, expiresAt, channel, effectiveAt, prune cutoff.
  // Of two revocations the earlier effective time and the later expiry win.
  revoke: `
local e = redis.call('HGET', KEYS[1], ARGV[1])
local json = ARGV[2]
local exp = tonumber(ARGV[3])
if e then
  local old = cjson.decode(e)
  exp = math.max(tonumber(old.expiresAt), tonumber(ARGV[3]))
  local eff = math.min(tonumber(old.revokedAt), tonumber(ARGV[5]))
  if exp == tonumber(old.expiresAt) and eff == tonumber(old.revokedAt) then return {'OK', e} end
  json = '{"tokenId":' .. cjson.encode(ARGV[1]) .. ',"expiresAt":' .. string.format('%d', exp) .. ',"revokedAt":' .. string.format('%d', eff) .. '}'
end
redis.call('HSET', KEYS[1], ARGV[1], json)
redis.call('ZADD', KEYS[2], exp, ARGV[1])
redis.call('PUBLISH', ARGV[4], 'revoked\\n' .. ARGV[1] .. '\\n' .. json)
${pruneRevocations('ARGV[4]', 'ARGV[6]')}
return {'OK', json}`,
  // KEYS: revocations, revocation-expiry. ARGV: tokenId, json, channel, expiresAt, prune cutoff
  revokeOnce: `
local e = redis.call('HGET', KEYS[1], ARGV[1])
if e then return {'EXISTS', e} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('PUBLISH', ARGV[3], 'revoked\\n' .. ARGV[1] .. '\\n' .. ARGV[2])
${pruneRevocations('ARGV[3]', 'ARGV[5]')}
return {'OK', ARGV[2]}`,
  // KEYS: login:<code>, logins. ARGV: json, px, code, channel
  createLogin: `
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'CONFLICT', ''} end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], 'login\\n' .. ARGV[3] .. '\\n')
return {'OK', ARGV[1]}`,
  // Compare-and-set of a login session. KEYS: login:<code>. ARGV: old json, new json, channel, code
  casLogin: `
local cur = redis.call('GET', KEYS[1])
if not cur then return {'NOT_FOUND', ''} end
if cur ~= ARGV[1] then return {'CHANGED', cur} end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('PUBLISH', ARGV[3], 'login\\n' .. ARGV[4] .. '\\n')
return {'OK', ARGV[2]}`,
  // KEYS: login:<code>, logins. ARGV: code, channel
  deleteLogin: `
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if n > 0 then redis.call('PUBLISH', ARGV[2], 'login\\n' .. ARGV[1] .. '\\n') end
return {'OK', ''}`,
  // Values of an indexed family of keys with TTL; prunes index entries whose key expired.
  // KEYS: index set. ARGV: key prefix
  gather: `
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then table.insert(out, v) else redis.call('SREM', KEYS[1], id) end
end
return out`,
  // Every relay's presence set, as id, sha1, value triples; the value is '' when the caller
  // already holds that sha1 (ARGV[2..]: id, sha1 pairs), so a periodic re-read of an unchanged
  // fleet moves and parses no sets. Prunes index entries whose key expired.
  // KEYS: presence-relays. ARGV: key prefix, then id, sha1 pairs.
  gatherPresence: `
local known = {}
for i = 2, #ARGV, 2 do known[ARGV[i]] = ARGV[i + 1] end
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then
    local h = redis.sha1hex(v)
    table.insert(out, id)
    table.insert(out, h)
    if known[id] == h then table.insert(out, '') else table.insert(out, v) end
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out`,
  // KEYS: presence:<relayId>, presence-relays. ARGV: json, px, relayId, channel
  // Announces only a changed set.
  putPresence: `
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if old ~= ARGV[1] then redis.call('PUBLISH', ARGV[4], 'presence\\n' .. ARGV[3] .. '\\n') end
return {'OK', ''}`,
  // KEYS: presence:<relayId>, presence-relays. ARGV: px, relayId
  // A heartbeat with an unchanged set: new TTL, no rewrite, no announcement; '0' when the key is gone.
  refreshPresence: `
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return {'OK', '0'} end
redis.call('SADD', KEYS[2], ARGV[2])
return {'OK', '1'}`,
  // KEYS: relay:<id>, relays, meta. ARGV: json, px, id, channel
  // Announces a new member or a changed draining flag (not every heartbeat).
  // Answers whether the store's meta record is still there: a wipe check that
  // costs nothing extra, as relays heartbeat every few seconds anyway.
  heartbeat: `
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if not old or cjson.decode(old).draining ~= cjson.decode(ARGV[1]).draining then
  redis.call('PUBLISH', ARGV[4], 'relay\\n' .. ARGV[3] .. '\\n')
end
return {'OK', tostring(redis.call('EXISTS', KEYS[3]))}`,
  // Store.claimTunnelSlot. KEYS: tunnel-slots:<group>, tunnels. ARGV: tunnelId, max, ttlMs.
  // Members whose tunnel is gone are dropped first, so a deleted tunnel's slot is free.
  claimTunnelSlot: `
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('HEXISTS', KEYS[2], m) == 0 then redis.call('SREM', KEYS[1], m) end
end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return {'FULL', ''} end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'OK', ''}`,
  // KEYS: relay:<id>, relays, presence:<id>, presence-relays. ARGV: id, channel
  removeRelay: `
local a = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
local b = redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
if a > 0 then redis.call('PUBLISH', ARGV[2], 'relay\\n' .. ARGV[1] .. '\\n') end
if b > 0 then redis.call('PUBLISH', ARGV[2], 'presence\\n' .. ARGV[1] .. '\\n') end
return {'OK', ''}`,
} as const;

export type ScriptName = keyof typeof LUA;
export const SHA: Record<ScriptName, string> = Object.fromEntries(
  Object.entries(LUA).map(([k, v]) => [k, createHash('sha1').update(v).digest('hex')]),
) as Record<ScriptName, string>;
