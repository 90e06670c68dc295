-- update-state: compare-and-swap of the state text, published to every instance.
--
-- KEYS[1]  state       the state object (JSON)
-- KEYS[2]  reg         the registration
-- KEYS[3]  deliveries  the webhook deliveries of the trace's finals (JSON array)
-- ARGV[1]  the state JSON the caller expects to be stored
-- ARGV[2]  the new state JSON
-- ARGV[3]  "1" when the new state is final
-- ARGV[4]  RESULT_TTL_MS: a final state stays readable at least this long
-- ARGV[5]  the trace's sharded pub/sub channel
-- ARGV[6]  not before (ms, Redis clock): swap only once TIME has reached it ("" for at once)
-- ARGV[7]  when the new state is final: its webhook deliveries (a DeliveryRecord's JSON, "" for none),
--          added in the same step unless a record of that id is there already
-- ARGV[8]  how long the deliveries are kept, in ms (WEBHOOK_MAX_AGE_MS and some)
-- Returns  {1} swapped | {0, stored JSON} another write came first | {-1} no such trace
--          | {2} not yet (TIME is before ARGV[6])
--
-- The swap is optimistic (SET … GET, put back when another write came first): one
-- command where a compare and a write would take two. Every write is published
-- ("s" + JSON), whether its version grew or not: watchers keep newer versions only, and
-- instances waiting for the poll lease see the poller is alive. Sharded pub/sub
-- (SPUBLISH) goes only to the shard that owns the trace's slot, where the subscribers'
-- SSUBSCRIBE lands too; a classic PUBLISH would cross the whole cluster bus.
if ARGV[6] ~= '' then
  local time = redis.call('TIME')
  if tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) < tonumber(ARGV[6]) then return {2} end
end
local current = redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL', 'GET')
if not current then
  redis.call('DEL', KEYS[1])
  return {-1}
end
if current ~= ARGV[1] then
  redis.call('SET', KEYS[1], current, 'KEEPTTL')
  return {0, current}
end
if ARGV[3] == '1' then
  -- GT: never shortens the retention of a trace registered long ago.
  redis.call('PEXPIRE', KEYS[1], ARGV[4], 'GT')
  redis.call('PEXPIRE', KEYS[2], ARGV[4], 'GT')
  if ARGV[7] ~= '' then
    -- The final and its deliveries are one write: a crash cannot leave a final without them.
    local record = cjson.decode(ARGV[7])
    local stored = redis.call('GET', KEYS[3])
    local records = stored and cjson.decode(stored) or {}
    local known = false
    for _, r in ipairs(records) do
      if r.id == record.id then known = true end
    end
    if not known then
      table.insert(records, record)
      redis.call('SET', KEYS[3], cjson.encode(records), 'PX', ARGV[8])
    end
  end
end
redis.call('SPUBLISH', ARGV[5], 's' .. ARGV[2])
return {1}
