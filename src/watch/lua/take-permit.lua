-- take-permit: one call from the deployment-wide budget (UPSTREAM_QPS), on the Redis clock.
--
-- KEYS[1]  budget  the earliest time the next call may start, in ms (Redis clock)
-- ARGV[1]  the pace: 1000 / UPSTREAM_QPS, in ms
-- Returns  {1} go | {0, ms} wait ms (the next slot, or the end of a ban)
--
-- The rule of src/domain/pacer.ts: calls are paced evenly, and a TOP rate-limit ban
-- moves the next slot to the ban's end (ban-upstream.lua), so one key holds both. The
-- slot is taken optimistically (SET … GET, put back when it was not free yet): one
-- command where a read and a write would take two while the budget has room.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local pace = tonumber(ARGV[1])
-- A budget left alone a minute past its next slot may as well vanish.
local previous = redis.call('SET', KEYS[1], tostring(now + pace), 'PX', math.ceil(pace) + 60000, 'GET')
local nextAt = tonumber(previous or '0')
if nextAt <= now then return {1} end
redis.call('SET', KEYS[1], previous, 'PX', math.ceil(nextAt - now) + 60000)
return {0, math.ceil(nextAt - now)}
