-- Refreshes a gateway's node lease and connection count (H2, X1).
-- KEYS[1] presence:{0}:nodes (zset)   KEYS[2] presence:{0}:conns (hash)
-- ARGV[1] node id   ARGV[2] new deadline (ms)   ARGV[3] open sockets
-- Returns the previous deadline (a string), or nil on first registration:
-- a previous deadline in the past means the node's lease lapsed and leaders
-- may have removed its devices, which the gateway must register again (H3).
local previous = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return previous
