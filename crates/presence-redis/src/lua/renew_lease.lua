-- Extends the lease if it still holds our value "<node>:<epoch>".
-- KEYS[1] presence:{s}:lease   ARGV[1] lease value   ARGV[2] ttl in ms
-- Returns 1 if renewed, 0 if the lease expired or belongs to another epoch.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
