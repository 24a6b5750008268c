local ta = redis.call('HGET', KEYS[1], 'ta')
if not ta then return 0 end
redis.call('HSET', KEYS[1], 'ts', ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.max(1, math.min(tonumber(ARGV[2]), tonumber(ta) - tonumber(ARGV[1]))))
return 1
