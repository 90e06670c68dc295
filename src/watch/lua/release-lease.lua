-- release-lease: gives the poll lease up, only for its holder, and announces it.
--
-- KEYS[1]  poll    "<token>:<ms>"
-- ARGV[1]  the holder's token
-- ARGV[2]  the minimum gap between call starts, in ms
-- ARGV[3]  the trace's sharded pub/sub channel
-- Returns  1 released | 0 the token did not hold it (a successor's lease is left alone)
--
-- The last call's start is kept until the gap has passed, so a successor stays spaced;
-- "r" is published so instances waiting for the lease try at once (a poll handed over on
-- SIGTERM resumes without waiting for anything to lapse).
local poll = redis.call('GET', KEYS[1])
if not poll then return 0 end
local sep = string.find(poll, ':', 1, true)
if string.sub(poll, 1, sep - 1) ~= ARGV[1] then return 0 end
local last = tonumber(string.sub(poll, sep + 1))
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local gap = tonumber(ARGV[2])
if last and now - last < gap then
  redis.call('SET', KEYS[1], ':' .. last, 'PX', math.ceil(last + gap - now))
else
  redis.call('DEL', KEYS[1])
end
redis.call('SPUBLISH', ARGV[3], 'r')
return 1
