"""The Lua scripts `RedisStore` runs: each touches one key, atomically, on the server's clock.

One hash per breaker key. Its fields (the names are short: they are stored per key):

========  ================================================================
``s``     state: ``c`` closed, ``o`` open, ``h`` half-open
``e``     epoch: a version that only grows (server microseconds at the
          transition, or one more than the last epoch), so a newer state
          wins even after the key expired or the server restarted
``t``     server time (ms) of the last transition
``u``     server time (ms) at which the open period ends
``r``     failed probe rounds since the fleet last closed (the backoff)
``ok``    probes that succeeded this round; ``sl`` those of them that were slow
``n``     lease counter
``L<id>`` a probe lease: server time (ms) at which it expires
``f<b>``  ``share_counts``: failures in time bucket ``b``; ``a<b>`` all outcomes
========  ================================================================

An OPEN key whose period has ended is half-open in effect; the first lease request
makes that explicit (a new epoch). Every write sets the key's expiry: an open key
lives for its open period plus ``idle`` ms, a half-open one ``idle`` ms after its last
lease, a closed one ``closed`` ms.

Every transition is published on the namespace's channel as
``1|<ref>|<epoch>|<state>|<ms left open>|<cause>|<origin>`` (`ref` is the key's
digest, `origin` the publishing store's random id). Nothing in a key or a message comes
from a URL unless the user asked for readable names.

Scripts answer ``{state, epoch, ms left open, verdict, ...}``; a missing key answers
state ``-`` and epoch 0. They take the same first ARGV: channel, ref, origin, idle ms,
closed ms; and the same last: the server time (ms) after which the call is too late to
run (0: never). A frozen server runs, when it resumes, the commands waiting in the
sockets of replicas that gave up on them: those answer verdict ``late`` and change
nothing.
"""

from __future__ import annotations

from typing import Final

__all__ = ["COUNT", "HALF_OPEN", "LEASE", "PEEK", "PUSH", "RESULT", "TRIP"]

# The common head: arguments, the server's clock, reading the key, entering a state.
_PRELUDE: Final = """
local key = KEYS[1]
local channel, ref, origin = ARGV[1], ARGV[2], ARGV[3]
local idle, closed = tonumber(ARGV[4]), tonumber(ARGV[5])
local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local now = math.floor(now_us / 1000)
local too_late = tonumber(ARGV[#ARGV]) or 0
if too_late > 0 and now > too_late then return {'-', 0, 0, 'late'} end

local function load()
  local v = redis.call('HMGET', key, 's', 'e', 'u', 'r', 't')
  if not v[1] then return nil end
  return {s = v[1], e = tonumber(v[2]) or 0, u = tonumber(v[3]) or 0,
          r = tonumber(v[4]) or 0, t = tonumber(v[5]) or 0}
end

local function left(st)
  if st.s == 'o' and st.u > now then return st.u - now end
  return 0
end

local function answer(st, verdict)
  if not st then return {'-', 0, 0, verdict} end
  return {st.s, st.e, left(st), verdict}
end

-- The open period after r failed rounds: base * multiplier^r, jitter on top, the cap
-- over both (jitter never takes a period past it), then the Retry-After floor.
local function period(r, base, mult, cap, jitter, floor)
  local p = base
  if r > 0 and mult ~= 1 then p = base * (mult ^ r) end
  p = p * (1 + jitter)
  if cap >= 0 and p > cap then p = cap end
  if floor > p then p = floor end
  return math.floor(p)
end

local function clear_round()
  local fields = redis.call('HKEYS', key)
  for _, f in ipairs(fields) do
    if string.sub(f, 1, 1) == 'L' then redis.call('HDEL', key, f) end
  end
end

local function clear_counts()
  local fields = redis.call('HKEYS', key)
  for _, f in ipairs(fields) do
    local c = string.sub(f, 1, 1)
    if c == 'f' or c == 'a' then redis.call('HDEL', key, f) end
  end
end

-- Enter state s (open until u, r failed rounds) as a new epoch; publish unless quiet.
local function enter(st, s, u, r, cause, quiet)
  local e = now_us
  if st and st.e >= e then e = st.e + 1 end
  if st then clear_round() end
  if s == 'c' then clear_counts() end
  redis.call('HSET', key, 's', s, 'e', string.format('%.0f', e), 't', now, 'u', u,
             'r', r, 'ok', 0, 'sl', 0)
  local st2 = {s = s, e = e, u = u, r = r, t = now}
  local ttl = idle
  if s == 'o' then ttl = left(st2) + idle elseif s == 'c' then ttl = closed end
  redis.call('PEXPIRE', key, ttl)
  if not quiet then
    redis.call('PUBLISH', channel, table.concat({'1', ref, string.format('%.0f', e), s,
               string.format('%.0f', left(st2)), cause, origin}, '|'))
  end
  return st2
end
"""

TRIP: Final = (
    _PRELUDE
    + """
-- A replica's breaker opened on its own. ARGV[6..]: cause, base ms, multiplier, cap ms
-- (-1: none), jitter (the fraction drawn for this period), Retry-After floor ms (0: none).
-- Opens the fleet unless it is open or half-open already (no double trip); the period
-- comes from the fleet's failed rounds. On an open key a floor can only extend it.
local cause = ARGV[6]
local base, mult, cap = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local jitter, floor = tonumber(ARGV[10]), tonumber(ARGV[11])
local st = load()
if not st or st.s == 'c' then
  local r = 0
  if st then r = st.r end
  return answer(enter(st, 'o', now + period(r, base, mult, cap, jitter, floor), r, cause),
                'opened')
end
if st.s == 'o' and st.u > now and floor > 0 and now + floor > st.u then
  return answer(enter(st, 'o', now + floor, st.r, 'retry_after'), 'extended')
end
return answer(st, 'unchanged')
"""
)

HALF_OPEN: Final = (
    _PRELUDE
    + """
-- A replica's open period ended on its own clock. Half-open only once it has ended on
-- the server's clock; otherwise answer how long is left.
local st = load()
if not st then return answer(st, 'missing') end
if st.s == 'o' then
  if now >= st.u then return answer(enter(st, 'h', 0, st.r, 'reset_timeout'), 'half_open') end
  return answer(st, 'wait')
end
return answer(st, 'unchanged')
"""
)

LEASE: Final = (
    _PRELUDE
    + """
-- A half-open replica wants a probe slot. ARGV[6..]: lease ms, the probe budget
-- (half_open_max_requests), the asking replica's failed rounds (used only when the key
-- is missing). Granted while unexpired leases plus successes are below the budget.
local ttl, budget, rounds = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local st = load()
if not st then
  -- The fleet forgot this key (expiry, restart): the replica's own half-open stands,
  -- quietly: closed replicas are not pulled into half-open by it.
  st = enter(nil, 'h', 0, rounds, 'reset_timeout', true)
elseif st.s == 'o' then
  if now < st.u then return answer(st, 'wait') end
  st = enter(st, 'h', 0, st.r, 'reset_timeout')
elseif st.s == 'c' then
  return answer(st, 'closed')
end
local active, soonest = 0, -1
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 1) == 'L' then
    local expires = tonumber(all[i + 1])
    if expires <= now then
      redis.call('HDEL', key, all[i])
    else
      active = active + 1
      if soonest < 0 or expires < soonest then soonest = expires end
    end
  end
end
local ok = tonumber(redis.call('HGET', key, 'ok')) or 0
if active + ok >= budget then
  local wait = 0
  if soonest >= 0 then wait = soonest - now end
  local out = answer(st, 'full')
  out[5] = wait
  return out
end
local id = redis.call('HINCRBY', key, 'n', 1)
redis.call('HSET', key, 'L' .. id, now + ttl)
redis.call('PEXPIRE', key, ttl + idle)
local out = answer(st, 'granted')
out[5] = id
out[6] = ttl
return out
"""
)

RESULT: Final = (
    _PRELUDE
    + """
-- The outcome of a probe that held a lease. ARGV[6..]: lease id, the lease's epoch,
-- outcome (s success, w slow success, f failure, i ignored), probe budget, slow-call
-- rate threshold (-1: off), then base ms, multiplier, cap ms, jitter, floor ms as TRIP.
-- A lease from another round, unknown or expired, is ignored. A failure reopens; enough
-- successes close (unless that round was too slow: then it reopens).
local id, lease_epoch, outcome = ARGV[6], tonumber(ARGV[7]), ARGV[8]
local budget, slow_rate = tonumber(ARGV[9]), tonumber(ARGV[10])
local base, mult, cap = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local jitter, floor = tonumber(ARGV[14]), tonumber(ARGV[15])
local st = load()
if not st or st.s ~= 'h' or st.e ~= lease_epoch then return answer(st, 'stale') end
local field = 'L' .. id
local expires = tonumber(redis.call('HGET', key, field))
if not expires then return answer(st, 'stale') end
redis.call('HDEL', key, field)
if expires <= now then return answer(st, 'stale') end
if outcome == 'f' then
  local r = st.r + 1
  return answer(enter(st, 'o', now + period(r, base, mult, cap, jitter, floor), r,
                      'probe_failed'), 'reopened')
end
if outcome == 'i' then return answer(st, 'released') end
local ok = redis.call('HINCRBY', key, 'ok', 1)
local slow = tonumber(redis.call('HGET', key, 'sl')) or 0
if outcome == 'w' then slow = redis.call('HINCRBY', key, 'sl', 1) end
if ok < budget then return answer(st, 'counted') end
if slow_rate >= 0 and slow / ok >= slow_rate then
  local r = st.r + 1
  return answer(enter(st, 'o', now + period(r, base, mult, cap, jitter, floor), r,
                      'slow_call_rate'), 'reopened')
end
return answer(enter(st, 'c', 0, 0, 'probes_succeeded'), 'closed')
"""
)

PUSH: Final = (
    _PRELUDE
    + """
-- After a reconnect: a replica's state the fleet may have missed. ARGV[6..]: the epoch
-- the replica last knew, state (o, h or c), ms left open, failed rounds, age ms (how
-- long ago the replica entered it). The newer state wins: the replica's, if the fleet
-- has not moved since the epoch it knew or moved longer ago than the replica did.
local known, s = tonumber(ARGV[6]), ARGV[7]
local ms_left, rounds, age = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local st = load()
if st and st.e ~= known and st.t > now - age then return answer(st, 'kept') end
-- Half-open is the end of an open period, not a decision: it never cuts the fleet's
-- period short on the server's clock.
if s == 'h' and st and st.s == 'o' and st.u > now then return answer(st, 'kept') end
if s == 'c' then
  if not st then return answer(st, 'unchanged') end
  return answer(enter(st, 'c', 0, 0, 'fleet_sync'), 'pushed')
end
if s == 'h' then ms_left = 0 end
return answer(enter(st, 'o', now + ms_left, rounds, 'fleet_sync'), 'pushed')
"""
)

PEEK: Final = (
    _PRELUDE
    + """
-- Read a key for reconciling: {state, epoch, ms left open, 'peek', ms since its last
-- transition}. Writes nothing.
local st = load()
local out = answer(st, 'peek')
if st then out[5] = now - st.t else out[5] = 0 end
return out
"""
)

COUNT: Final = (
    _PRELUDE
    + """
-- share_counts: add a replica's outcomes in CLOSED to the fleet's and open the fleet on
-- a fleet-wide failure rate. ARGV[6..]: failures, outcomes, window ms, buckets in the
-- window, minimum outcomes, failure-rate threshold, then base ms, multiplier, cap ms,
-- jitter, floor ms as TRIP. Counts live in time buckets; old buckets are dropped.
local failed, total = tonumber(ARGV[6]), tonumber(ARGV[7])
local window, buckets = tonumber(ARGV[8]), tonumber(ARGV[9])
local minimum, threshold = tonumber(ARGV[10]), tonumber(ARGV[11])
local base, mult, cap = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local jitter, floor = tonumber(ARGV[15]), tonumber(ARGV[16])
local st = load()
if st and st.s ~= 'c' then return answer(st, 'unchanged') end
local width = math.max(1, math.floor(window / buckets))
local b = math.floor(now / width)
if total > 0 then
  redis.call('HINCRBY', key, 'a' .. b, total)
  if failed > 0 then redis.call('HINCRBY', key, 'f' .. b, failed) end
end
local sum_all, sum_failed = 0, 0
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  local c = string.sub(all[i], 1, 1)
  if c == 'a' or c == 'f' then
    local at = tonumber(string.sub(all[i], 2))
    if at and at > b - buckets then
      if c == 'a' then sum_all = sum_all + tonumber(all[i + 1])
      else sum_failed = sum_failed + tonumber(all[i + 1]) end
    elseif at then
      redis.call('HDEL', key, all[i])
    end
  end
end
if sum_all >= minimum and sum_all > 0 and sum_failed / sum_all >= threshold then
  local r = 0
  if st then r = st.r end
  return answer(enter(st, 'o', now + period(r, base, mult, cap, jitter, floor), r,
                      'fleet_failure_rate'), 'opened')
end
if not st then
  -- A new key only holds counts: make it a closed key that expires like one.
  redis.call('HSET', key, 's', 'c', 'e', 0, 't', now, 'r', 0)
end
redis.call('PEXPIRE', key, math.max(closed, window))
local out = answer(load(), 'counted')
out[5] = sum_failed
out[6] = sum_all
return out
"""
)
