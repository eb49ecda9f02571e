//! The store's Lua scripts. Each check-and-update is one script, so it is atomic in Redis and
//! costs one round trip; time comes from Redis (`TIME`), so replicas need not agree on clocks.
//!
//! Keys, under `{prefix}:v1:` (the `v1` is the layout's version, see `health::SCHEMA`):
//! - `lane:{name}:held`, `key:{name}:held`: sorted sets of leases, scored by expiry (µs);
//! - `lane:{name}:rate:{s|m|t}`, `key:{name}:rate:{s|m|t}`: a GCRA theoretical arrival time (µs)
//!   for requests per second, per minute and tokens per minute;
//! - `lane:{name}:cool`: until when an upstream's hint pauses the lane (µs);
//! - channel `free`: `l:{lane}` or `k:{key}` when a slot frees in a set that was full.

use std::sync::LazyLock;

use redis::Script;

/// KEYS: lane held, key held, lane cool, then one TAT key per rate.
/// ARGV: member, lease µs, lane limit, key limit (0 = none), then per rate: interval µs,
/// tolerance µs, cost.
/// Returns `{0}` granted, `{1, 0, scope}` full (1 lane, 2 key), `{2, wait µs, rate index}`,
/// `{3, wait µs}` cooling down.
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cool = tonumber(redis.call('GET', KEYS[3]) or '0')
if cool > now then return {3, math.ceil(cool - now), 0} end
local n = (#ARGV - 4) / 3
local worst, which, tats = 0, 0, {}
for i = 1, n do
  local interval, tol, cost = tonumber(ARGV[3*i + 2]), tonumber(ARGV[3*i + 3]), tonumber(ARGV[3*i + 4])
  local tat = tonumber(redis.call('GET', KEYS[3 + i]) or '0')
  if tat < now then tat = now end
  local new = tat + cost * interval
  local wait = new - tol - now
  if wait > worst then worst, which = wait, i end
  tats[i] = new
end
if which > 0 then return {2, math.ceil(worst), which} end
local lease = tonumber(ARGV[2])
for s = 1, 2 do
  local limit = tonumber(ARGV[2 + s])
  if limit > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[s], '-inf', now)
    if redis.call('ZCARD', KEYS[s]) >= limit then return {1, 0, s} end
  end
end
for s = 1, 2 do
  if tonumber(ARGV[2 + s]) > 0 then
    redis.call('ZADD', KEYS[s], now + lease, ARGV[1])
    redis.call('PEXPIRE', KEYS[s], math.ceil(lease / 1000) * 2)
  end
end
for i = 1, n do
  redis.call('SET', KEYS[3 + i], string.format('%.0f', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000) + 1000)
end
return {0}
",
    )
});

/// KEYS: lane held, key held, then the TAT keys of token limits to settle.
/// ARGV: member, lane limit, key limit, channel, lane message, key message, then per token
/// limit: interval µs, tokens to give back (negative: to charge).
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for s = 1, 2 do
  local limit = tonumber(ARGV[1 + s])
  local full = limit > 0 and redis.call('ZCARD', KEYS[s]) >= limit
  if redis.call('ZREM', KEYS[s], ARGV[1]) == 1 and full then
    redis.call('PUBLISH', ARGV[4], ARGV[4 + s])
  end
end
for i = 3, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat > 0 then
    local interval, back = tonumber(ARGV[2*i + 1]), tonumber(ARGV[2*i + 2])
    redis.call('SET', KEYS[i], string.format('%.0f', tat - back * interval), 'KEEPTTL')
  end
end
return 0
",
    )
});

/// KEYS: one lane's cool key. ARGV: pause µs. Keeps the later of the two pauses.
pub static COOL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local till = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if till > cur then
  redis.call('SET', KEYS[1], string.format('%.0f', till), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1)
end
return 0
",
    )
});

/// KEYS: held sets. ARGV: lease µs, then for each key in turn: a count and that many members.
/// Moves the expiry of each member still held forward (`XX`: a released one is not re-added).
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local until_ = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
local j = 2
for k = 1, #KEYS do
  local count = tonumber(ARGV[j])
  for m = 1, count do
    redis.call('ZADD', KEYS[k], 'XX', until_, ARGV[j + m])
  end
  redis.call('PEXPIRE', KEYS[k], math.ceil(tonumber(ARGV[1]) / 1000) * 2)
  j = j + count + 1
end
return 0
",
    )
});
