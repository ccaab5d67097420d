-- Deletes the lease if it still holds our value (clean shutdown).
-- KEYS[1] presence:{s}:lease   ARGV[1] lease value
-- Returns 1 if released, 0 if it was no longer ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
