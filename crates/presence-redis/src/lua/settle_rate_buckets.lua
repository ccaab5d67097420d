-- Settles one gateway's local view of per-user rate-limit buckets with the
-- buckets every gateway shares (generic cell rate algorithm on Redis's
-- clock, microseconds). Called in the background, for every bucket of one
-- shard the gateway touched since its last call.
-- KEYS[i]  presence:{s}:rate:<bucket>:<uid>: "<full_at>:<node>", the instant the
--          bucket is full again and the gateway that last charged it
-- ARGV[1]  the calling gateway's node id
-- ARGV, then five per key i (from (i-1)*5+2):
--   interval   microseconds to earn one token
--   capacity   tokens in a full bucket
--   charged    tokens the gateway already granted from its own view: charged
--              unconditionally, as if taken `age` microseconds ago
--   age        how long ago the first of them was granted
--   wanted     tokens asked for now: granted while the bucket has them
-- Returns, per key, three integers: tokens granted of `wanted`, the
-- microseconds until the bucket is full again (0: full), and 1 if another
-- gateway charged the bucket since it was last full (the bucket is shared
-- now: the caller should ask rather than decide alone), else 0.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stored = redis.call('MGET', unpack(KEYS))
local node = ARGV[1]
local out = {}
for i = 1, #KEYS do
  local a = (i - 1) * 5 + 1
  local interval = tonumber(ARGV[a + 1])
  local burst = tonumber(ARGV[a + 2]) * interval
  local charged = tonumber(ARGV[a + 3])
  local since = now - tonumber(ARGV[a + 4])
  local wanted = tonumber(ARGV[a + 5])
  local full_at = 0
  local shared = 0
  if stored[i] then
    local at, owner = string.match(stored[i], '^(%d+):?(.*)$')
    full_at = tonumber(at) or 0
    if owner ~= nil and owner ~= node and full_at > now then
      shared = 1
    end
  end
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
    redis.call('SET', KEYS[i], string.format('%d:%s', full_at, node), 'PX',
      math.floor((full_at - now) / 1000) + 1)
  end
  local debt = full_at - now
  if debt < 0 then
    debt = 0
  end
  out[3 * i - 2] = granted
  out[3 * i - 1] = debt
  out[3 * i] = shared
end
return out
