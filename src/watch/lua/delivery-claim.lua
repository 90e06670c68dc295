-- delivery-claim: claims a trace's due webhook attempt, so one is in flight at a time.
--
-- KEYS[1]  deliveries  the webhook deliveries of the trace's finals (JSON array)
-- KEYS[2]  claim       the token of an attempt in flight
-- ARGV[1]  the claimer's token
-- ARGV[2]  how long the claim lasts, in ms (the attempt's timeout and some)
-- ARGV[3]  the deliveries' JSON the claimer decided on
-- Returns  1 claimed | 0 someone holds a claim, or the deliveries changed meanwhile
if redis.call('GET', KEYS[1]) ~= ARGV[3] then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
