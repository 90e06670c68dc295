-- take-registration: a registration quota (REGISTRATIONS_PER_MINUTE), on the Redis clock.
--
-- KEYS[1]  quota   hash: tokens, updated_ms
-- ARGV[1]  per minute: the bucket's size and its refill a minute
-- ARGV[2]  "take", or "refund" to put one back
-- Returns  {1} go (or refunded) | {0, ms} retry after ms
--
-- The rule of takeQuota in src/domain/token-bucket.ts.
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
