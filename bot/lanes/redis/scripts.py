"""Lua scripts of the Redis lane backend (:mod:`bot.lanes.redis`).

Each script touches the keys of exactly one hash slot, so it runs unchanged on Redis Cluster:
``S_*`` scripts the two keys of one session (``KEYS[1]`` its message list, ``KEYS[2]`` its
state hash), ``G_*`` scripts the five global keys (``KEYS[1]`` ready zset, ``KEYS[2]`` delayed
zset, ``KEYS[3]`` slots zset, ``KEYS[4]`` stats hash, ``KEYS[5]`` held set: sessions that
became ready while their slot was still held, pushed to ready when that slot is released).
Times come from the server's ``TIME`` (milliseconds), so workers on hosts with skewed clocks
agree on lease expiry.

Session list entries are ``<mode><json>``: one mode letter (``c`` collect, ``f`` followup,
``i`` interrupt) followed by the message's JSON. Session hash fields:

- ``st``: ``I`` idle, ``R`` ready (in the ready zset), ``D`` debounce (in the delayed zset),
  ``A`` a turn runs (lease held).
- ``run``/``rov``/``rmode``/``rint``: the running (or cancelled, carried) turn: how many head
  entries it holds, how many of them are overflow, its mode letter, interrupted flag.
- ``tok``/``own``/``exp``: the lease: fencing token, worker id, expiry (server ms).
- ``int``: an interrupt was requested for the running turn; ``car``: the next turn carries
  the cancelled turn's entries (interrupt semantics).
- ``fold``: waiting entries (after the running turn's) folded into the next turn's overflow;
  ``ep``/``ntc``: an overflow episode is open / its notice was taken.
- ``quiet``: server ms of the last message or turn end (the ``collect`` quiet window).
- ``sk``: the session key, kept only when the key's hash tag is a digest (the sweeper needs
  the name to put the session back in the ready zset).
"""

from __future__ import annotations

from typing import Final

from bot.config import QueueMode

MODE_LETTER: Final = {QueueMode.COLLECT: "c", QueueMode.FOLLOWUP: "f", QueueMode.INTERRUPT: "i"}
"""The mode letter that starts a session list entry, per queue mode."""
LETTER_MODE: Final = {v: k for k, v in MODE_LETTER.items()}
"""The queue mode of each mode letter."""

_NOW: Final = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local _t = redis.call('TIME')
local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)
"""

S_ENQUEUE: Final = (
    _NOW
    + """
-- ARGV: entry, mode letter, lane_cap, session key ('' unless the hash tag is a digest)
local q, h = KEYS[1], KEYS[2]
local st = redis.call('HGET', h, 'st')
local newlane = 0
if (not st) or st == 'I' then newlane = 1; st = 'I' end
if newlane == 1 and ARGV[4] ~= nil and ARGV[4] ~= '' then redis.call('HSET', h, 'sk', ARGV[4]) end
local len = redis.call('RPUSH', q, ARGV[1])
local f = redis.call('HMGET', h, 'run', 'fold', 'int', 'ep', 'own', 'tok', 'car')
local run = tonumber(f[1]) or 0
local fold = tonumber(f[2]) or 0
local int = f[3] == '1'
local car = f[7] == '1'
local base = 0
if st == 'A' or car then base = run end
local waiting = len - base - fold
local cap = tonumber(ARGV[3])
local newep = 0
if waiting > cap then
  fold = fold + waiting - cap
  if f[4] ~= '1' then
    newep = 1
    redis.call('HSET', h, 'ep', '1', 'ntc', '0')
  end
  redis.call('HSET', h, 'fold', fold)
end
redis.call('HSET', h, 'quiet', now)
local action = 0
if st == 'I' then
  redis.call('HSET', h, 'st', 'R')
  redis.call('PERSIST', h)
  action = 1
elseif st == 'R' then
  action = 3
elseif ARGV[2] == 'i' then
  if st == 'D' then
    redis.call('HSET', h, 'st', 'R')
    action = 1
  elseif st == 'A' and not int then
    redis.call('HSET', h, 'int', '1')
    int = true
    action = 2
  end
end
local pending = len
if st == 'A' and not int then pending = len - run end
return {action, pending, newep, newlane, f[5] or '', f[6] or ''}
"""
)
"""Append one entry. Returns ``{action, pending, new_episode, new_lane, owner, token}``;
action 0 nothing, 1 push the session to the ready zset, 2 cancel the running turn, 3 the
session was already ready: make sure a global structure holds it (``G_STEP`` op ``q``). An
earlier ``S_ENQUEUE`` may have made it ready and lost its reply (a dropped connection; redis-py
then retries, or the caller fails and the platform retries), so its push never happened."""

S_BEGIN: Final = (
    _NOW
    + """
-- ARGV: token, owner, lease_ms, debounce_ms
local q, h = KEYS[1], KEYS[2]
local st = redis.call('HGET', h, 'st')
local len = redis.call('LLEN', q)
if (not st) or st == 'I' or len == 0 then return {'e'} end
local f = redis.call('HMGET', h, 'run', 'rov', 'rmode', 'rint', 'exp', 'int', 'car', 'fold',
  'quiet', 'ep', 'ntc')
local car = f[7] == '1'
local lease = now + tonumber(ARGV[3])
if st == 'A' then
  local exp = tonumber(f[5]) or 0
  if exp > now then return {'b', exp - now} end
  if f[6] == '1' then
    car = true
  else
    local run = tonumber(f[1]) or 0
    redis.call('HSET', h, 'tok', ARGV[1], 'own', ARGV[2], 'exp', lease)
    local out = {'t', tonumber(f[2]) or 0, f[3] or 'c', tonumber(f[4]) or 0, -1, 1}
    for _, e in ipairs(redis.call('LRANGE', q, 0, run - 1)) do out[#out + 1] = e end
    return out
  end
end
if st == 'D' and not car then
  local due = (tonumber(f[9]) or 0) + tonumber(ARGV[4])
  if due > now then return {'l', due - now} end
end
local ov, mode, intr, n
if car then
  ov = tonumber(f[2]) or 0
  n = len
  mode = 'i'
  intr = 1
else
  local fold = tonumber(f[8]) or 0
  local items = redis.call('LRANGE', q, fold, -1)
  ov = fold
  mode = string.sub(items[1], 1, 1)
  n = fold + 1
  intr = 0
  if mode ~= 'f' then
    for i = 2, #items do
      if string.sub(items[i], 1, 1) == 'f' then break end
      n = n + 1
    end
  end
end
local notice = -1
if f[10] == '1' and f[11] ~= '1' then notice = tonumber(f[8]) or 0 end
redis.call('HSET', h, 'st', 'A', 'run', n, 'rov', ov, 'rmode', mode, 'rint', intr,
  'tok', ARGV[1], 'own', ARGV[2], 'exp', lease, 'car', '0', 'int', '0', 'fold', 0,
  'ep', '0', 'ntc', '0')
local out = {'t', ov, mode, intr, notice, 0}
for _, e in ipairs(redis.call('LRANGE', q, 0, n - 1)) do out[#out + 1] = e end
return out
"""
)
"""Take a lease and compose the next turn. Returns ``{'t', n_overflow, mode, interrupted,
notice_count (-1: none), resumed, entries...}``, ``{'e'}`` nothing to do, ``{'b', ms}`` another
worker's lease is alive for ms, ``{'l', ms}`` the quiet window ends in ms."""

S_ACK: Final = (
    _NOW
    + """
-- ARGV: token, debounce_ms, idle_ms
local q, h = KEYS[1], KEYS[2]
local f = redis.call('HMGET', h, 'tok', 'run', 'int', 'fold', 'st')
if f[1] ~= ARGV[1] or f[5] ~= 'A' then return {-1, 'x'} end
local run = tonumber(f[2]) or 0
if run > 0 then redis.call('LTRIM', q, run, -1) end
local len = redis.call('LLEN', q)
if len == 0 then
  redis.call('DEL', h)
  redis.call('HSET', h, 'st', 'I', 'quiet', now)
  redis.call('PEXPIRE', h, math.max(tonumber(ARGV[3]), 1))
  return {run, 'i'}
end
redis.call('HSET', h, 'run', 0, 'rov', 0, 'own', '', 'exp', 0, 'quiet', now)
if f[3] == '1' then
  redis.call('HSET', h, 'st', 'R', 'int', '0')
  return {run, 'r'}
end
local head = redis.call('LINDEX', q, tonumber(f[4]) or 0)
if string.sub(head, 1, 1) == 'c' and tonumber(ARGV[2]) > 0 then
  redis.call('HSET', h, 'st', 'D')
  return {run, 'd'}
end
redis.call('HSET', h, 'st', 'R')
return {run, 'r'}
"""
)
"""Finish a turn: remove its entries if ``token`` still holds the lease (fencing). Returns
``{n_removed, next}`` with next ``i`` idle, ``r`` ready, ``d`` debounce, ``x`` refused."""

S_YIELD: Final = """
-- ARGV: token
local h = KEYS[2]
local f = redis.call('HMGET', h, 'tok', 'int', 'st')
if f[1] ~= ARGV[1] or f[3] ~= 'A' then return -1 end
if f[2] == '1' then
  redis.call('HSET', h, 'st', 'R', 'car', '1', 'int', '0', 'own', '', 'exp', 0)
else
  redis.call('HSET', h, 'own', '', 'exp', 0)
end
return 0
"""
"""Give up a running turn without removing its entries: after an interrupt the next turn
carries them; otherwise the lease expires now and the next worker resumes the same turn."""

S_HEARTBEAT: Final = (
    _NOW
    + """
-- ARGV: token, lease_ms
local h = KEYS[2]
local f = redis.call('HMGET', h, 'tok', 'int', 'st')
if f[1] ~= ARGV[1] or f[3] ~= 'A' then return -1 end
redis.call('HSET', h, 'exp', now + tonumber(ARGV[2]))
if f[2] == '1' then return 1 end
return 0
"""
)
"""Extend a lease. Returns -1 lost (fenced), 1 an interrupt is pending, 0 fine."""

S_NOTICE: Final = """
local h = KEYS[2]
local f = redis.call('HMGET', h, 'ep', 'ntc', 'fold')
if f[1] ~= '1' or f[2] == '1' then return -1 end
redis.call('HSET', h, 'ntc', '1')
return tonumber(f[3]) or 0
"""
"""Take the overflow notice of the open episode once. Returns the folded count or -1."""

_SNAPSHOT: Final = """
local ver = redis.call('HINCRBY', KEYS[4], 'ver', 1)
local snap = redis.call('HMGET', KEYS[4], 'queued', 'lanes')
"""

G_STEP: Final = (
    _NOW
    + """
-- ARGV: queued_delta, lanes_delta, max_claims, lease_ms, cap, wake channel, publish pushes
--       ('1'/'0'), then
--       operations in order, three arguments each: op, session, delay_ms; op 'p' push a
--       session that became ready (publish on channel), 'r' release its slot and push it,
--       'd' release and delay it by delay_ms, 'n' release only, 'q' push a session that was
--       already ready only if no global structure holds it (its push may have been lost).
-- A session that becomes ready while its slot is still held (its turn is ending in another
-- process; or a claim pops it while it runs) waits in the held set and is pushed when that
-- slot is released, whatever the release says: the release's view of the session may
-- predate the push. It does not sit in the ready zset meanwhile (no claim pops it again).
local ready, delayed, slots, stats, held = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local published = false
for i = 8, #ARGV, 3 do
  local op, s = ARGV[i], ARGV[i + 1]
  if op == 'q' then
    if redis.call('ZSCORE', ready, s) or redis.call('ZSCORE', delayed, s)
        or redis.call('ZSCORE', slots, s) or redis.call('SISMEMBER', held, s) == 1 then
      op = ''
    else
      op = 'p'
    end
  elseif op ~= 'p' then
    redis.call('ZREM', slots, s)
    if redis.call('SREM', held, s) == 1 then op = 'r' end
  end
  if op == 'p' and redis.call('ZSCORE', slots, s) then
    redis.call('SADD', held, s)
  elseif op == 'p' or op == 'r' then
    redis.call('ZREM', delayed, s)
    if not redis.call('ZSCORE', ready, s) then
      redis.call('ZADD', ready, redis.call('HINCRBY', stats, 'seq', 1), s)
    end
    if op == 'p' and ARGV[7] == '1' and not published then
      redis.call('PUBLISH', ARGV[6], 'r')
      published = true
    end
  elseif op == 'd' then
    if not redis.call('ZSCORE', ready, s) then
      redis.call('ZADD', delayed, now + tonumber(ARGV[i + 2]), s)
    end
  end
end
if ARGV[1] ~= '0' then redis.call('HINCRBY', stats, 'queued', ARGV[1]) end
if ARGV[2] ~= '0' then redis.call('HINCRBY', stats, 'lanes', ARGV[2]) end
-- Leases that expired (dead workers): their sessions are resumed first.
for _, m in ipairs(redis.call('ZRANGEBYSCORE', slots, '-inf', '(' .. now)) do
  redis.call('ZREM', slots, m)
  redis.call('SREM', held, m)
  redis.call('ZADD', ready, 0, m)
end
-- Quiet windows that ended.
for _, m in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 256)) do
  redis.call('ZREM', delayed, m)
  if not redis.call('ZSCORE', ready, m) then
    redis.call('ZADD', ready, redis.call('HINCRBY', stats, 'seq', 1), m)
  end
end
local out = {}
local free = tonumber(ARGV[5]) - redis.call('ZCARD', slots)
local n = math.min(tonumber(ARGV[3]), free)
while n > 0 do
  local p = redis.call('ZPOPMIN', ready)
  if #p == 0 then break end
  if redis.call('ZSCORE', slots, p[1]) then
    -- Still running (its release may be in flight): ready again when its slot is released.
    redis.call('SADD', held, p[1])
  else
    redis.call('ZADD', slots, now + tonumber(ARGV[4]), p[1])
    out[#out + 1] = p[1]
    out[#out + 1] = redis.call('HINCRBY', stats, 'fence', 1)
    n = n - 1
  end
end
-- Work left and slots free: wake the other workers.
if not published and n > 0 and redis.call('ZCARD', ready) > 0 then
  redis.call('PUBLISH', ARGV[6], 'r')
end
local nxt = -1
local d = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if #d > 0 then nxt = math.max(tonumber(d[2]) - now, 0) end
local l = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
if #l > 0 then
  local e = math.max(tonumber(l[2]) - now + 1, 0)
  if nxt < 0 or e < nxt then nxt = e end
end
"""
    + _SNAPSHOT
    + """
local res = {ver, tonumber(snap[1]) or 0, tonumber(snap[2]) or 0, redis.call('ZCARD', ready), nxt,
  free}
for _, x in ipairs(out) do res[#res + 1] = x end
return res
"""
)
"""Apply a batch of pushes (sessions that became ready, or were and may have lost their push)
and releases (slots of ended turns, with their sessions' next step) in order and the counter
deltas (a push meeting a held slot waits in the held set for that slot's release), reap expired
leases, move due quiet windows to ready, then claim up to ``max_claims`` ready sessions under
the global cap. Returns ``{version, queued, lanes, ready, next_ms, free_slots, session, token,
...}``; next_ms is when a quiet window ends or a lease may expire (-1: nothing pending);
free_slots counts slots free before claiming."""

G_HEARTBEAT: Final = (
    _NOW
    + """
-- ARGV: lease_ms, sessions...
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[3], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
return 0
"""
)
"""Extend the global slot leases of the given sessions (only those still held)."""

S_STUCK: Final = (
    _NOW
    + """
-- ARGV: min_age_ms
local q, h = KEYS[1], KEYS[2]
local f = redis.call('HMGET', h, 'st', 'quiet', 'exp', 'sk')
local st = f[1]
if st ~= 'R' and st ~= 'D' and st ~= 'A' then return {0} end
if redis.call('LLEN', q) == 0 then return {0} end
local age = tonumber(ARGV[1])
if st == 'A' then
  if (tonumber(f[3]) or 0) + age > now then return {0} end
elseif (tonumber(f[2]) or 0) + age > now then
  return {0}
end
return {1, st, f[4] or ''}
"""
)
"""Whether a session may be lost to the global slot: it has messages and has been ready
(``R``) or in a quiet window (``D``) for at least ``min_age_ms``, or its lease expired at least
that long ago (``A``). Returns ``{0}`` or ``{1, state, session key or ''}``; the sweeper then
asks ``G_SWEEP`` to re-add it if no global structure holds it."""

G_SWEEP: Final = """
-- ARGV: wake channel, sessions...
local ready, delayed, slots, stats, held = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local out = {}
for i = 2, #ARGV do
  local s = ARGV[i]
  if not (redis.call('ZSCORE', ready, s) or redis.call('ZSCORE', delayed, s)
      or redis.call('ZSCORE', slots, s) or redis.call('SISMEMBER', held, s) == 1) then
    redis.call('ZADD', ready, redis.call('HINCRBY', stats, 'seq', 1), s)
    out[#out + 1] = s
  end
end
if #out > 0 then redis.call('PUBLISH', ARGV[1], 'r') end
return out
"""
"""Re-add to the ready zset those of the given sessions that no global structure holds (ready,
delayed, slots, held). Returns the sessions re-added; wakes the workers when there are any."""

S_PURGE: Final = (
    _NOW
    + """
-- ARGV: mode ('a': every entry is the subject's; 's': selected), then for 's' pairs
--       entry, replacement ('' removes the entry; another string replaces it in place)
local q, h = KEYS[1], KEYS[2]
local f = redis.call('HMGET', h, 'st', 'run', 'rov', 'exp', 'car', 'fold')
local st = f[1] or 'I'
local live = st == 'A' and (tonumber(f[4]) or 0) > now
local held = 0
if st == 'A' or f[5] == '1' then held = tonumber(f[2]) or 0 end
local rov0, fold0 = tonumber(f[3]) or 0, tonumber(f[6]) or 0
local all = ARGV[1] == 'a'
local pick = {}
if not all then
  for i = 2, #ARGV - 1, 2 do pick[ARGV[i]] = ARGV[i + 1] end
end
local keep = {}
local removed, edited, inflight = 0, 0, 0
local run, rov, fold = held, rov0, fold0
for i, e in ipairs(redis.call('LRANGE', q, 0, -1)) do
  local idx = i - 1
  local new = e
  if all then new = '' elseif pick[e] ~= nil then new = pick[e] end
  if new ~= e and live and idx < held then
    inflight = inflight + 1
    new = e
  end
  if new == '' then
    removed = removed + 1
    if idx < held then
      run = run - 1
      if idx < rov0 then rov = rov - 1 end
    elseif idx - held < fold0 then
      fold = fold - 1
    end
  else
    if new ~= e then edited = edited + 1 end
    keep[#keep + 1] = new
  end
end
if #keep == 0 then
  local counted = 0
  if st ~= 'I' then counted = -1 end
  local gone = 0
  if redis.call('DEL', q, h) > 0 then gone = 1 end
  return {removed, edited, inflight, gone, counted}
end
if removed == 0 and edited == 0 then return {0, 0, inflight, 0, 0} end
redis.call('DEL', q)
for s = 1, #keep, 1000 do
  redis.call('RPUSH', q, unpack(keep, s, math.min(s + 999, #keep)))
end
if run ~= held then
  if run > 0 then
    redis.call('HSET', h, 'run', run, 'rov', rov)
  elseif st == 'A' then
    redis.call('HSET', h, 'st', 'R', 'run', 0, 'rov', 0, 'car', '0', 'int', '0', 'own', '',
      'exp', 0)
  else
    redis.call('HSET', h, 'run', 0, 'rov', 0, 'car', '0')
  end
end
local waiting = #keep - run
if fold > waiting - 1 then fold = math.max(waiting - 1, 0) end
if fold ~= fold0 then
  redis.call('HSET', h, 'fold', fold)
  if fold == 0 then redis.call('HSET', h, 'ep', '0', 'ntc', '0') end
end
return {removed, edited, inflight, 0, 0}
"""
)
"""Take a data subject's entries out of one session's list and rewrite entries naming them
(:mod:`bot.lanes.redis.purge`), keeping the lane's state consistent. Entries of a turn whose
lease is alive stay (counted as in flight: its ``S_ACK`` trims exactly ``run`` entries). Removed
entries of a carried or dead (lease expired) turn shrink ``run``/``rov``; a dead turn left with
none becomes ready (its expired slot is reaped to the ready zset as usual); removed folded
entries shrink ``fold``, which never reaches the last waiting entry (``S_BEGIN`` needs a head
after the fold). An emptied lane loses both keys, as if it had never been. Returns
``{removed, rewritten, in_flight, dropped (keys deleted: 1, else 0), lanes_delta}``."""

G_FORGET: Final = """
-- ARGV: queued_delta, lanes_delta, sessions...
local ready, delayed, stats, held = KEYS[1], KEYS[2], KEYS[4], KEYS[5]
if ARGV[1] ~= '0' then redis.call('HINCRBY', stats, 'queued', ARGV[1]) end
if ARGV[2] ~= '0' then redis.call('HINCRBY', stats, 'lanes', ARGV[2]) end
for i = 3, #ARGV do
  redis.call('ZREM', ready, ARGV[i])
  redis.call('ZREM', delayed, ARGV[i])
  redis.call('SREM', held, ARGV[i])
end
return 0
"""
"""Apply a purge's counter deltas and take the sessions whose lanes it removed out of the
ready and delayed zsets and the held set (a slot still held is released by its turn, or reaped
when its lease expires; its claim then finds an empty lane)."""

SOURCES: Final = {
    "S_ENQUEUE": S_ENQUEUE,
    "S_BEGIN": S_BEGIN,
    "S_ACK": S_ACK,
    "S_YIELD": S_YIELD,
    "S_HEARTBEAT": S_HEARTBEAT,
    "S_NOTICE": S_NOTICE,
    "G_STEP": G_STEP,
    "G_HEARTBEAT": G_HEARTBEAT,
    "S_STUCK": S_STUCK,
    "G_SWEEP": G_SWEEP,
    "S_PURGE": S_PURGE,
    "G_FORGET": G_FORGET,
}
"""Every lane script by name."""
