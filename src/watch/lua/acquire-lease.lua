-- acquire-lease: takes a trace's poll lease when nobody holds it.
--
-- KEYS[1]  reg     the registration (the trace must exist)
-- KEYS[2]  poll    "<token>:<ms>": the holder's token ("" when released) and when the last
--                  call started (Redis clock, "" before the first); PX = the lease
-- ARGV[1]  the new token
-- ARGV[2]  the lease, in ms
-- Returns  {1} acquired | {2, ms} held by another for at least ms more | {0} no such trace
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local poll = redis.call('GET', KEYS[2])
if not poll then
  redis.call('SET', KEYS[2], ARGV[1] .. ':', 'PX', ARGV[2])
  return {1}
end
local sep = string.find(poll, ':', 1, true)
if sep > 1 then return {2, redis.call('PTTL', KEYS[2])} end
-- Released, but the last call's start is kept for the spacing: keep it.
redis.call('SET', KEYS[2], ARGV[1] .. string.sub(poll, sep), 'PX', ARGV[2])
return {1}
