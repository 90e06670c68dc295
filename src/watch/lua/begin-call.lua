-- begin-call: the call gate (SPEC §4.1), on the Redis clock.
--
-- KEYS[1]  poll    "<token>:<ms>": the lease holder's token and the last call's start
-- ARGV[1]  the caller's token
-- ARGV[2]  the minimum gap between call starts, in ms
-- ARGV[3]  the lease, in ms: a call that goes extends it
-- ARGV[4]  the trace's deadline (expires_at), in ms
-- Returns  {1, now} go (the start recorded) | {2, ms, now} wait ms | {0} lost (the token
--          does not hold the lease) | {3, now} the deadline has passed
--
-- One GET and one SET per call: the lease token and the last start share one key, so
-- recording the start renews the lease too.
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
return {1, now}
