-- sendgate compare-and-set of a key's reputation.
--
-- KEYS[1]  the key's hash
-- ARGV[1]  the version the caller read ("0" for none)
-- ARGV[2]  "1" to delete the usage fields too (a reset)
-- ARGV[3]  idle TTL in milliseconds ("0": keep forever: the caller's
--          choice for a HELD key and one that needs remediation)
-- ARGV[4..] field/value pairs of the new reputation, "v" among them
--
-- Returns 1 when written, 0 when the stored version differs (the caller
-- reads again and retries).
local v = redis.call('HGET', KEYS[1], 'v')
if not v then v = '0' end
if v ~= ARGV[1] then return 0 end
if ARGV[2] == '1' then
  redis.call('HDEL', KEYS[1], 't0', 'u0', 't1', 'u1', 't2', 'u2', 't3', 'u3',
    'w0s', 'w0c', 'w0p', 'w1s', 'w1c', 'w1p', 'w2s', 'w2c', 'w2p', 'w3s', 'w3c', 'w3p', 'pn')
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('PERSIST', KEYS[1])
end
return 1
