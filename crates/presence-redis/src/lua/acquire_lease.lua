-- Acquires a shard's aggregator lease if nobody holds it.
-- KEYS[1] presence:{s}:lease   KEYS[2] presence:{s}:epoch
-- ARGV[1] node id              ARGV[2] ttl in ms
-- Returns the new epoch, or nil if the lease is held (by anyone, us included:
-- a node restarted under the same id waits for its old lease to expire).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
return epoch
