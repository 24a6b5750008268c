if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'c', ARGV[1], 'p', ARGV[2], 'u', ARGV[3], 't0', ARGV[5], 'ta', ARGV[6], 'ts', ARGV[5], 'd', ARGV[8])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'i', ARGV[4]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'v', ARGV[9]) end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
