-- One token from a per-user rate-limit bucket shared by every gateway
-- (generic cell rate algorithm, Redis's clock, microseconds).
-- KEYS[1] presence:{s}:rate:<bucket>:<uid>: the instant the bucket is full again
-- ARGV[1] microseconds to earn one token   ARGV[2] capacity (tokens)
-- Returns 0 if a token was taken, else the microseconds to wait for one.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2]) * interval
local full_at = tonumber(redis.call('GET', KEYS[1]) or '0')
if full_at < now then
  full_at = now
end
local after = full_at + interval
if after - now > burst then
  return after - now - burst
end
redis.call('SET', KEYS[1], string.format('%d', after), 'PX', math.floor((after - now) / 1000) + 1)
return 0
