-- renew-lease: extends the poll lease between calls, only for its holder.
--
-- KEYS[1]  poll    "<token>:<ms>"
-- ARGV[1]  the holder's token
-- ARGV[2]  the lease, in ms
-- ARGV[3]  the trace's sharded pub/sub channel
-- Returns  1 extended (and "a" published: the holder is alive) | 0 the token does not hold it
local poll = redis.call('GET', KEYS[1])
if not poll or string.sub(poll, 1, string.find(poll, ':', 1, true) - 1) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SPUBLISH', ARGV[3], 'a')
return 1
