-- delivery-settle: records an attempt's result and releases its claim.
--
-- KEYS[1]  deliveries  the webhook deliveries of the trace's finals (JSON array)
-- KEYS[2]  claim       the token of an attempt in flight
-- ARGV[1]  the claimer's token
-- ARGV[2]  the deliveries' JSON the claimer read
-- ARGV[3]  the deliveries' JSON after the attempt ("" when nothing is left)
-- Returns  {1} settled | {0} the claim is lost (the result is dropped: the attempt is made
--          again) | {2, stored JSON} the deliveries changed meanwhile (a new final's
--          record was added): settle again from the stored JSON
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {0} end
local stored = redis.call('GET', KEYS[1])
if stored ~= ARGV[2] then return {2, stored or ''} end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
end
redis.call('DEL', KEYS[2])
return {1}
