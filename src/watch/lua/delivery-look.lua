-- delivery-look: what a trace's webhook deliveries need; reads only.
--
-- KEYS[1]  deliveries  the webhook deliveries of the trace's finals (JSON array)
-- KEYS[2]  claim       the token of an attempt in flight
-- KEYS[3]  state       the state object
-- KEYS[4]  poll        the poll lease ("<token>:<ms>")
-- Returns  {"records", JSON, claim ms left (<= 0: none)} | {"open", 1 polled or 0} | {"done"}
--          (no deliveries, and the trace final or forgotten)
local records = redis.call('GET', KEYS[1])
if records then return {'records', records, redis.call('PTTL', KEYS[2])} end
local state = redis.call('GET', KEYS[3])
if not state or string.find(state, '"final":true', 1, true) then return {'done'} end
local poll = redis.call('GET', KEYS[4])
if poll and string.find(poll, ':', 1, true) > 1 then return {'open', 1} end
return {'open', 0}
