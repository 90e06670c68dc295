-- register: stores a new bind attempt with its initial state, on the Redis clock.
--
-- KEYS[1]  reg     the registration (canonical JSON)
-- KEYS[2]  state   the state object (JSON)
-- KEYS[3]  poll    the poll lease and the last call's start ("<token>:<ms>")
-- ARGV[1]  the registration's canonical JSON
-- ARGV[2]  the initial state's JSON, with "{{now}}" where created_at and updated_at go
--          and "{{deadline}}" where expires_at goes
-- ARGV[3]  BIND_TIMEOUT_MS: the deadline is this long after now
-- ARGV[4]  retention ms: how long the trace is kept (BIND_TIMEOUT_MS + RESULT_TTL_MS)
-- Returns  {"created", state JSON} | {"existing", state JSON} | {"conflict"}
--
-- created_at and expires_at come from TIME here, so the deadline every instance
-- compares against is on the one clock of the trace's node (SPEC §4.7).

-- Epoch milliseconds as ISO 8601 UTC, as JavaScript's Date.prototype.toISOString writes
-- it (the days-to-civil algorithm of H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
local function iso8601(ms)
  local seconds = math.floor(ms / 1000)
  local millis = ms - seconds * 1000
  local days = math.floor(seconds / 86400)
  local rest = seconds - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, day,
    math.floor(rest / 3600), math.floor(rest % 3600 / 60), rest % 60, millis)
end

local function create()
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local state = string.gsub(ARGV[2], '{{now}}', iso8601(now))
  state = string.gsub(state, '{{deadline}}', iso8601(now + tonumber(ARGV[3])))
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
  redis.call('SET', KEYS[2], state, 'PX', ARGV[4])
  -- Leftovers of an earlier registration of the same trace_id start afresh.
  redis.call('DEL', KEYS[3])
  return {'created', state}
end

local stored = redis.call('GET', KEYS[1])
if not stored then return create() end
if stored ~= ARGV[1] then return {'conflict'} end
local current = redis.call('GET', KEYS[2])
-- The state expired a moment before the registration: store the attempt afresh.
if not current then return create() end
return {'existing', current}
