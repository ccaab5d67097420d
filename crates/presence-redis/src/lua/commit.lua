-- The fenced commit of a shard leader: all or nothing, and only while the
-- caller still holds the shard's lease.
--
-- KEYS[1]   presence:{s}:lease
-- KEYS[2..] every key and channel the operations name (one slot: {s})
-- ARGV[1]   the lease value the leader holds, "<node>:<epoch>"
-- ARGV[2]   the publish command: PUBLISH, or SPUBLISH on Redis Cluster
-- ARGV[3..] operations, each an op name, a KEYS index, then its arguments:
--   set  k value        del  k
--   mset n k1 value1 … kn valuen   (n SETs as one MSET; the encoder merges
--                       consecutive sets into it: one command instead of n)
--   setpx k value ms    (SET with a time to live in milliseconds)
--   hset k field value  hdel k field
--   sadd k member       srem k member
--   zadd k score member zrem k member
--   pub  k message      (k is a channel)
--
-- Returns 1 when committed, 0 when fenced (the lease is absent or holds
-- another value; nothing was written or published).
--
-- Atomicity: Redis does not roll a script back when a command fails half
-- way, so every operation is checked first (its key's type, as the batch
-- itself changes it) and only then is anything written.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end

local arity = { set = 3, setpx = 4, del = 2, hset = 4, hdel = 3, sadd = 3, srem = 3,
                zadd = 4, zrem = 3, pub = 3 }
local kind = { hset = 'hash', hdel = 'hash', sadd = 'set', srem = 'set',
               zadd = 'zset', zrem = 'zset' }

-- Pass 1: validate, without writing.
local types = {}
local i = 3
while i <= #ARGV do
  local op = ARGV[i]
  local n = arity[op]
  if op == 'mset' then
    local count = tonumber(ARGV[i + 1])
    if count == nil or count < 1 then
      return redis.error_reply('ERR commit: mset needs a positive count')
    end
    n = 2 + 2 * count
  end
  if n == nil then
    return redis.error_reply('ERR commit: unknown operation ' .. tostring(op))
  end
  if i + n - 1 > #ARGV then
    return redis.error_reply('ERR commit: operation ' .. op .. ' is missing arguments')
  end
  if op == 'mset' then
    for j = i + 2, i + n - 1, 2 do
      local k = KEYS[tonumber(ARGV[j])]
      if k == nil then
        return redis.error_reply('ERR commit: operation mset names no key')
      end
      types[k] = 'string'
    end
  else
    local k = KEYS[tonumber(ARGV[i + 1])]
    if k == nil then
      return redis.error_reply('ERR commit: operation ' .. op .. ' names no key')
    end
    if op == 'set' then
      types[k] = 'string'
    elseif op == 'setpx' then
      local ms = tonumber(ARGV[i + 3])
      if ms == nil or ms <= 0 then
        return redis.error_reply('ERR commit: setpx needs a positive time to live')
      end
      types[k] = 'string'
    elseif op == 'del' then
      types[k] = 'none'
    elseif op ~= 'pub' then
      local want = kind[op]
      local t = types[k]
      if t == nil then
        t = redis.call('TYPE', k).ok
      end
      if t ~= 'none' and t ~= want then
        return redis.error_reply('WRONGTYPE commit: ' .. k .. ' holds a ' .. t .. ', not a ' .. want)
      end
      if op == 'zadd' and tonumber(ARGV[i + 2]) == nil then
        return redis.error_reply('ERR commit: zadd score is not a number')
      end
      if op == 'hset' or op == 'sadd' or op == 'zadd' then
        types[k] = want
      else
        types[k] = t
      end
    end
  end
  i = i + n
end

-- Pass 2: apply, in order.
local publish = ARGV[2]
i = 3
while i <= #ARGV do
  local op = ARGV[i]
  local n = arity[op]
  if op == 'mset' then
    -- One MSET per 1000 keys: Lua's unpack() takes a few thousand values
    -- at most.
    n = 2 + 2 * tonumber(ARGV[i + 1])
    local args = {}
    for j = i + 2, i + n - 1, 2 do
      args[#args + 1] = KEYS[tonumber(ARGV[j])]
      args[#args + 1] = ARGV[j + 1]
      if #args == 2000 then
        redis.call('MSET', unpack(args))
        args = {}
      end
    end
    if #args > 0 then
      redis.call('MSET', unpack(args))
    end
  else
    local k = KEYS[tonumber(ARGV[i + 1])]
    if op == 'set' then
      redis.call('SET', k, ARGV[i + 2])
    elseif op == 'setpx' then
      redis.call('SET', k, ARGV[i + 2], 'PX', ARGV[i + 3])
    elseif op == 'del' then
      redis.call('DEL', k)
    elseif op == 'hset' then
      redis.call('HSET', k, ARGV[i + 2], ARGV[i + 3])
    elseif op == 'hdel' then
      redis.call('HDEL', k, ARGV[i + 2])
    elseif op == 'sadd' then
      redis.call('SADD', k, ARGV[i + 2])
    elseif op == 'srem' then
      redis.call('SREM', k, ARGV[i + 2])
    elseif op == 'zadd' then
      redis.call('ZADD', k, ARGV[i + 2], ARGV[i + 3])
    elseif op == 'zrem' then
      redis.call('ZREM', k, ARGV[i + 2])
    elseif op == 'pub' then
      redis.call(publish, k, ARGV[i + 2])
    end
  end
  i = i + n
end
return 1
