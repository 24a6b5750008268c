if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'c', ARGV[1], 'ta', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'v', ARGV[4]) else redis.call('HDEL', KEYS[1], 'v') end
local left = tonumber(ARGV[2]) - tonumber(ARGV[3])
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 or left < ttl then redis.call('PEXPIRE', KEYS[1], left) end
return 1
