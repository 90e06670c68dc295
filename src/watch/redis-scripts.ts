import type { Cluster, Redis } from "ioredis";

/*
 * The Lua scripts of the Redis coordinator. Each one touches the keys of a single
 * trace (hash tag `{<trace_id>}`) or only the deployment-wide `{upstream}` keys, so
 * every script runs on one Cluster slot.
 *
 * Clocks: scripts compare times the caller passes (`nowMs`, caller clock), never
 * Redis TIME, because the port hands the caller's clock to beginCall,
 * takeCallPermit and hasInterest. Instances' clocks are assumed roughly in sync
 * (NTP): a skew of d ms shifts the call spacing, the budget and interest expiry by
 * about d ms. Relative TTLs (PX/PEXPIRE) do not depend on any clock.
 */

/**
 * KEYS: 1 reg, 2 state, 3 lease, 4 last_call, 5 interest
 * ARGV: 1 registration canonical JSON, 2 initial state JSON, 3 retention ms,
 *       4 start of the previous call in ms ("" for none), 5 last_call ttl ms
 * Returns: {"created"} | {"existing", state JSON} | {"conflict"}
 */
const REGISTER = `
local reg, state = KEYS[1], KEYS[2]
if redis.call('SET', reg, ARGV[1], 'NX', 'PX', ARGV[3]) then
  redis.call('SET', state, ARGV[2], 'PX', ARGV[3])
  -- Leftovers of an earlier registration of the same trace_id start afresh.
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
  if ARGV[4] ~= '' then redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5]) end
  return {'created'}
end
if redis.call('GET', reg) ~= ARGV[1] then
  return {'conflict'}
end
local current = redis.call('GET', state)
if not current then
  -- The state expired a moment before the registration: store the attempt afresh.
  redis.call('SET', reg, ARGV[1], 'PX', ARGV[3])
  redis.call('SET', state, ARGV[2], 'PX', ARGV[3])
  if ARGV[4] ~= '' then redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5]) end
  return {'created'}
end
return {'existing', current}
`;

/**
 * Compare-and-swap of the state text. Sharded pub/sub (SPUBLISH): in a Cluster a
 * classic PUBLISH is broadcast over the bus to every node, so its cost grows with
 * the cluster; SPUBLISH goes only to the shard that owns the trace's slot, where
 * the subscriber's SSUBSCRIBE lands too (ioredis Cluster `shardedSubscribers`).
 * It needs Redis >= 7.0, standalone or Cluster alike.
 *
 * KEYS: 1 state, 2 reg
 * ARGV: 1 expected current state JSON, 2 new state JSON, 3 "1" to publish (version grew),
 *       4 "1" when the new state is final, 5 result ttl ms, 6 events channel
 * Returns: 1 swapped, 0 the stored text differs from ARGV[1], -1 no such trace
 */
const UPDATE_STATE = `
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
if ARGV[4] == '1' then
  -- A final state stays readable for at least RESULT_TTL_MS (GT: never shortens).
  redis.call('PEXPIRE', KEYS[1], ARGV[5], 'GT')
  redis.call('PEXPIRE', KEYS[2], ARGV[5], 'GT')
end
if ARGV[3] == '1' then
  redis.call('SPUBLISH', ARGV[6], ARGV[2])
end
return 1
`;

/**
 * KEYS: 1 reg, 2 lease
 * ARGV: 1 token, 2 ttl ms
 * Returns: 1 acquired, 0 held by someone else or no such trace
 */
const ACQUIRE_LEASE = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
`;

/**
 * KEYS: 1 lease
 * ARGV: 1 token, 2 ttl ms
 * Returns: 1 extended, 0 the token no longer holds the lease
 */
const RENEW_LEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`;

/**
 * KEYS: 1 lease, 2 state, 3 events channel
 * ARGV: 1 token
 * Returns: 1 released, 0 the token did not hold the lease (a successor's lease is left alone)
 * On release the current state is published again (same version, so watchers ignore it):
 * instances waiting for the lease take that as the signal to try at once, and a poll
 * handed over on SIGTERM resumes without waiting out a retry period.
 */
const RELEASE_LEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  local state = redis.call('GET', KEYS[2])
  if state then redis.call('SPUBLISH', KEYS[3], state) end
  return 1
end
return 0
`;

/**
 * KEYS: 1 lease, 2 last_call
 * ARGV: 1 token, 2 now ms (caller clock), 3 min gap ms, 4 last_call ttl ms
 * Returns: {1} go (start recorded) | {2, until ms} wait | {0} lost (token does not hold the lease)
 */
const BEGIN_CALL = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local now, gap = tonumber(ARGV[2]), tonumber(ARGV[3])
local last = redis.call('GET', KEYS[2])
if last then
  last = tonumber(last)
  if now - last < gap then return {2, math.ceil(last + gap)} end
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
return {1}
`;

/**
 * The rule of src/domain/token-bucket.ts (takeToken) in Lua; the ban is checked first
 * and a refused take leaves the bucket as it was.
 *
 * KEYS: 1 budget (hash: tokens, updated_ms), 2 ban
 * ARGV: 1 now ms (caller clock), 2 rate per second, 3 capacity, 4 idle ttl ms
 * Returns: {1} go | {0, until ms} wait (ban end or next token)
 */
const TAKE_PERMIT = `
local now, rate, capacity = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ban = tonumber(redis.call('GET', KEYS[2]) or '0')
if ban > now then return {0, math.ceil(ban)} end
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'updated_ms')
local tokens, updated = capacity, now
if saved[1] and saved[2] then
  tokens, updated = tonumber(saved[1]), tonumber(saved[2])
end
local elapsed = math.max(0, now - updated)
tokens = math.min(capacity, tokens + elapsed * rate / 1000)
-- Time only moves forward here: a caller whose clock lags must not make the
-- next caller count the same interval twice.
updated = math.max(updated, now)
if tokens >= 1 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'updated_ms', tostring(updated))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {1}
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated_ms', tostring(updated))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {0, now + math.ceil((1 - tokens) * 1000 / rate)}
`;

/**
 * KEYS: 1 ban
 * ARGV: 1 until ms, 2 now ms (coordinator clock)
 * Returns: 1 the ban now ends at ARGV[1], 0 a ban at least as long was already in force (or it is over)
 */
const BAN_UPSTREAM = `
local untilMs, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if untilMs <= current or untilMs <= now then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', math.ceil(untilMs - now))
return 1
`;

/**
 * KEYS: 1 reg, 2 interest (zset: member instance id, score until ms)
 * ARGV: 1 instance id, 2 until ms, 3 now ms (coordinator clock, for pruning)
 * Returns: 1 recorded, 0 no such trace
 */
const SET_INTEREST = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = tonumber(ARGV[3])
-- GT: an instance's interest never shortens; new members are still added.
redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top[2] then
  redis.call('PEXPIRE', KEYS[2], math.max(1, math.ceil(tonumber(top[2]) - now)))
end
return 1
`;

/**
 * KEYS: 1 reg, 2 interest
 * ARGV: 1 now ms (caller clock)
 * Returns: 1 some instance wants the trace after now, else 0
 */
const HAS_INTEREST = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf') > 0 then return 1 end
return 0
`;

/**
 * A registration quota (REGISTRATIONS_PER_MINUTE) on the Redis clock: a bucket of
 * `per minute` tokens refilled at `per minute` a minute, the rule of takeQuota in
 * src/domain/token-bucket.ts. A refund puts one token back.
 *
 * KEYS: 1 quota (hash: tokens, updated_ms)
 * ARGV: 1 per minute, 2 "take" or "refund"
 * Returns: {1} go (or refunded) | {0, retry after ms}
 */
const TAKE_REGISTRATION = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local capacity = tonumber(ARGV[1])
local perMs = capacity / 60000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'updated_ms')
local tokens, updated = capacity, now
if saved[1] and saved[2] then
  tokens, updated = tonumber(saved[1]), tonumber(saved[2])
end
tokens = math.min(capacity, tokens + math.max(0, now - updated) * perMs)
updated = math.max(updated, now)
local reply = {1}
if ARGV[2] == 'refund' then
  tokens = math.min(capacity, tokens + 1)
elseif tokens >= 1 then
  tokens = tokens - 1
else
  reply = {0, math.ceil((1 - tokens) / perMs)}
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated_ms', tostring(updated))
-- A bucket left alone for a minute is full again: it may as well vanish.
redis.call('PEXPIRE', KEYS[1], 61000)
return reply
`;

type Arg = string | number;

/** The scripts as typed functions over one connection; ioredis sends EVALSHA and falls back to EVAL on NOSCRIPT. */
export interface CoordinatorScripts {
  register(
    keys: [string, string, string, string, string],
    args: [string, string, number, number | "", number],
  ): Promise<unknown>;
  updateState(keys: [string, string], args: [string, string, "0" | "1", "0" | "1", number, string]): Promise<unknown>;
  acquireLease(keys: [string, string], args: [string, number]): Promise<unknown>;
  renewLease(keys: [string], args: [string, number]): Promise<unknown>;
  releaseLease(keys: [string, string, string], args: [string]): Promise<unknown>;
  beginCall(keys: [string, string], args: [string, number, number, number]): Promise<unknown>;
  takePermit(keys: [string, string], args: [number, number, number, number]): Promise<unknown>;
  banUpstream(keys: [string], args: [number, number]): Promise<unknown>;
  setInterest(keys: [string, string], args: [string, number, number]): Promise<unknown>;
  hasInterest(keys: [string, string], args: [number]): Promise<unknown>;
  takeRegistration(keys: [string], args: [number, "take" | "refund"]): Promise<unknown>;
}

const SCRIPTS: Record<keyof CoordinatorScripts, { readonly lua: string; readonly keys: number }> = {
  register: { lua: REGISTER, keys: 5 },
  updateState: { lua: UPDATE_STATE, keys: 2 },
  acquireLease: { lua: ACQUIRE_LEASE, keys: 2 },
  renewLease: { lua: RENEW_LEASE, keys: 1 },
  releaseLease: { lua: RELEASE_LEASE, keys: 3 },
  beginCall: { lua: BEGIN_CALL, keys: 2 },
  takePermit: { lua: TAKE_PERMIT, keys: 2 },
  banUpstream: { lua: BAN_UPSTREAM, keys: 1 },
  setInterest: { lua: SET_INTEREST, keys: 2 },
  hasInterest: { lua: HAS_INTEREST, keys: 2 },
  takeRegistration: { lua: TAKE_REGISTRATION, keys: 1 },
};

/** Command names on the connection; namespaced so they cannot clash with the caller's own scripts. */
const COMMAND_PREFIX = "bindwatch_";

type ScriptCommand = (...args: Arg[]) => Promise<unknown>;

/**
 * Defines the coordinator's scripts on a connection (idempotent) and returns them as functions.
 * @example const scripts = defineCoordinatorScripts(redis); await scripts.renewLease([keys.lease], [token, 5000]);
 */
export function defineCoordinatorScripts(client: Redis | Cluster): CoordinatorScripts {
  const commands = client as unknown as Record<string, ScriptCommand | undefined>;
  const bind = (name: keyof CoordinatorScripts) => {
    const command = `${COMMAND_PREFIX}${name}`;
    const script = SCRIPTS[name];
    if (typeof commands[command] !== "function") {
      client.defineCommand(command, { lua: script.lua, numberOfKeys: script.keys });
    }
    return (keys: readonly string[], args: readonly Arg[]): Promise<unknown> => {
      const run = commands[command];
      if (!run) throw new Error(`script ${command} is not defined`);
      return run.call(client, ...keys, ...args);
    };
  };
  return {
    register: bind("register"),
    updateState: bind("updateState"),
    acquireLease: bind("acquireLease"),
    renewLease: bind("renewLease"),
    releaseLease: bind("releaseLease"),
    beginCall: bind("beginCall"),
    takePermit: bind("takePermit"),
    banUpstream: bind("banUpstream"),
    setInterest: bind("setInterest"),
    hasInterest: bind("hasInterest"),
    takeRegistration: bind("takeRegistration"),
  };
}
