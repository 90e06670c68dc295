-- reassert: puts back a trace the store lost (Redis restarted empty, a failover lost
-- the last writes) as an instance last saw it, unless it is there again.
--
-- KEYS[1]  reg     the registration
-- KEYS[2]  state   the state object
-- KEYS[3]  poll    the poll lease and the last call's start ("<token>:<ms>")
-- ARGV[1]  the registration's canonical JSON
-- ARGV[2]  the state's JSON as the instance last saw it
-- ARGV[3]  retention ms from now
-- ARGV[4]  how long ago the instance saw the last call start, in ms ("" when it saw none)
-- ARGV[5]  the minimum gap between call starts, in ms
-- Returns  the stored state's JSON afterwards
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3])
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) and ARGV[4] ~= '' then
  local ago, gap = tonumber(ARGV[4]), tonumber(ARGV[5])
  if ago < gap and redis.call('EXISTS', KEYS[3]) == 0 then
    -- Whoever calls next stays spaced from the call before the loss.
    local time = redis.call('TIME')
    local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    redis.call('SET', KEYS[3], ':' .. (now - ago), 'PX', math.ceil(gap - ago))
  end
end
return redis.call('GET', KEYS[2])
