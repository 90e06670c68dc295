-- ban-upstream: holds every caller of the deployment off (a TOP rate-limit ban).
--
-- KEYS[1]  budget  the earliest time the next call may start, in ms (Redis clock)
-- ARGV[1]  the ban's length, in ms from now
-- Returns  1 the ban now ends ARGV[1] from now | 0 a ban at least as long was in force
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local untilMs = now + tonumber(ARGV[1])
if untilMs <= tonumber(redis.call('GET', KEYS[1]) or '0') then return 0 end
redis.call('SET', KEYS[1], tostring(untilMs), 'PX', math.ceil(tonumber(ARGV[1])) + 60000)
return 1
