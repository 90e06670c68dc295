-- begin-call: the call gate (SPEC §4.1), on the Redis clock.
--
-- KEYS[1]  poll    "<token>:<ms>": the lease holder's token and the last call's start
-- KEYS[2]  state   the state object (JSON)
-- ARGV[1]  the caller's token
-- ARGV[2]  the minimum gap between call starts, in ms
-- ARGV[3]  the lease, in ms: a call that goes extends it
-- ARGV[4]  the trace's deadline (expires_at), in ms
-- ARGV[5]  a state the caller expects stored, with ARGV[6] to write in its place when the
--          call goes ("" for none): an answer that made no new version, carried here
--          rather than written on its own
-- ARGV[6]  the state JSON to write
-- ARGV[7]  the trace's sharded pub/sub channel
-- Returns  {1, now, 1} go, the start recorded and the carried state written | {1, now, 0, stored}
--          go, but another write came first (stored: the state JSON there) | {1, now} go,
--          nothing carried | {2, ms, now} wait ms | {0} lost (the token does not hold the
--          lease) | {3, now} the deadline has passed
--
-- The lease token and the last start share one key, so recording the start renews the
-- lease in the same write. The carried state is swapped optimistically (SET … GET, put
-- back when another write came first): one command where a compare would take two.
local poll = redis.call('GET', KEYS[1])
if not poll then return {0} end
local sep = string.find(poll, ':', 1, true)
if string.sub(poll, 1, sep - 1) ~= ARGV[1] then return {0} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if now >= tonumber(ARGV[4]) then return {3, now} end
local last = tonumber(string.sub(poll, sep + 1))
local gap = tonumber(ARGV[2])
if last and now - last < gap then return {2, math.ceil(last + gap - now), now} end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. now, 'PX', ARGV[3])
if ARGV[5] == '' then return {1, now} end
local stored = redis.call('SET', KEYS[2], ARGV[6], 'KEEPTTL', 'GET')
if stored == ARGV[5] then
  -- Published like every write: watchers keep newer versions, waiters see the poller is alive.
  redis.call('SPUBLISH', ARGV[7], 's' .. ARGV[6])
  return {1, now, 1}
end
if stored then
  redis.call('SET', KEYS[2], stored, 'KEEPTTL')
else
  redis.call('DEL', KEYS[2])
end
return {1, now, 0, stored}
