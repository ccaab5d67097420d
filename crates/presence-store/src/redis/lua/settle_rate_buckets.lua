-- Settles one gateway's local view of per-user rate-limit buckets with the
-- buckets every gateway shares (generic cell rate algorithm on Redis's
-- clock, microseconds). Called in the background, for every bucket of one
-- shard the gateway touched since its last call.
-- KEYS[i]  presence:{s}:rate:<bucket>:<uid>: the instant the bucket is full again
-- ARGV, five per key i (from (i-1)*5+1):
--   interval   microseconds to earn one token
--   capacity   tokens in a full bucket
--   charged    tokens the gateway already granted from its own view: charged
--              unconditionally, as if taken `age` microseconds ago
--   age        how long ago the first of them was granted
--   wanted     tokens asked for now: granted while the bucket has them
-- Returns, per key, two integers: tokens granted of `wanted`, and the
-- microseconds until the bucket is full again (0: full).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stored = redis.call('MGET', unpack(KEYS))
local out = {}
for i = 1, #KEYS do
  local a = (i - 1) * 5
  local interval = tonumber(ARGV[a + 1])
  local burst = tonumber(ARGV[a + 2]) * interval
  local charged = tonumber(ARGV[a + 3])
  local since = now - tonumber(ARGV[a + 4])
  local wanted = tonumber(ARGV[a + 5])
  local full_at = tonumber(stored[i] or '0') or 0
  if charged > 0 then
    if full_at < since then
      full_at = since
    end
    full_at = full_at + charged * interval
  end
  local granted = 0
  while granted < wanted do
    local base = full_at
    if base < now then
      base = now
    end
    local after = base + interval
    if after - now > burst then
      break
    end
    full_at = after
    granted = granted + 1
  end
  if (charged > 0 or granted > 0) and full_at > now then
    redis.call('SET', KEYS[i], string.format('%d', full_at), 'PX',
      math.floor((full_at - now) / 1000) + 1)
  end
  local debt = full_at - now
  if debt < 0 then
    debt = 0
  end
  out[2 * i - 1] = granted
  out[2 * i] = debt
end
return out
