"""Workflow state in Redis: action records, windows, episodes, counters, the webhook outbox.

Every decision that must survive a redelivery is taken inside one Lua script, so two
consumers (say, during a rebalance) cannot both decide for the same verdict, and a
decision once taken is replayed rather than re-taken.

Action records (``act:rec:<workflow>:<verdict>``) move pending → done:
- pending: decided (fire / suppress), side effect not yet confirmed. A redelivery redoes
  the side effect with the same ids (line-command id, webhook-id), so a crash between
  the broker ack and the done-mark gives at most a duplicate that downstream recognises.
- done: the side effect was acknowledged; a redelivery only records ``suppressed_dedup``.

Key layout: ``ActKeys`` in :mod:`inspector.bus.store` (one definition of every Redis key).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import orjson
import redis

from inspector.bus.store import ActKeys as Keys
from inspector.bus.store import StoreRejected, StoreUnavailable, record_fault


@contextlib.contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Redis unreachable or not ready → StoreUnavailable, which pauses the stream loop;
    a refusal retrying cannot fix (WRONGTYPE, a script error) → StoreRejected, which
    dead-letters the record (``store_rejected``) and lets the stream go on."""
    try:
        yield
    except redis.RedisError as exc:
        if record_fault(exc):
            raise StoreRejected(f"Redis refused {what}: {exc}") from None
        raise StoreUnavailable(
            f"Redis unavailable during {what}: {exc}; act pauses, offsets not committed"
        ) from None


# --------------------------------------------------------------------------- scripts

# KEYS: record, debounce. ARGV: debounce_ms, record ttl s, now, verdict id.
# → {1, record} when decided now, {0, record} when a record already existed.
DIVERT_LUA = """
local rec = redis.call('GET', KEYS[1])
if rec then return {0, rec} end
local decision = 'fire'
if tonumber(ARGV[1]) > 0 then
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= ARGV[4] then
    decision = 'suppressed_debounce'
  else
    redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[1])
  end
end
rec = cjson.encode({state='pending', decision=decision, at=ARGV[3]})
redis.call('SET', KEYS[1], rec, 'EX', ARGV[2])
return {1, rec}
"""

# KEYS: record, window, faults, episode.
# ARGV: verdict id, captured_at, verdict, counts toward fails (0/1), in fault scope (0/1),
#       window_s, fail_count, consecutive_faults, cooldown_s, now, record ttl, episode id.
# → {0, record} existing, {1, record} decided now, {2, ''} below threshold (no record:
#   window and streak updates are idempotent by verdict id, so a replay is harmless).
STOP_LINE_LUA = """
local rec = redis.call('GET', KEYS[1])
if rec then return {0, rec} end
local window_s = tonumber(ARGV[6])
local now = tonumber(ARGV[10])
local fails = 0
local faults = 0
local trigger = nil
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[1])
  local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  local top = tonumber(newest[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. tostring(top - window_s))
  redis.call('EXPIRE', KEYS[2], math.ceil(window_s) + 3600)
  fails = redis.call('ZCARD', KEYS[2])
  if fails >= tonumber(ARGV[7]) then trigger = 'fail_count' end
end
if ARGV[5] == '1' then
  if ARGV[3] == 'FAULT' then
    redis.call('SADD', KEYS[3], ARGV[1])
    redis.call('EXPIRE', KEYS[3], tonumber(ARGV[11]))
    faults = redis.call('SCARD', KEYS[3])
    if tonumber(ARGV[8]) > 0 and faults >= tonumber(ARGV[8]) and not trigger then
      trigger = 'consecutive_faults'
    end
  else
    redis.call('DEL', KEYS[3])
  end
end
if not trigger then return {2, ''} end
local ep = redis.call('GET', KEYS[4])
if ep then
  local e = cjson.decode(ep)
  if now < tonumber(e.cooldown_until) then
    rec = cjson.encode({state='pending', decision='suppressed_cooldown', at=ARGV[10],
                        episode_id=e.episode_id, trigger=trigger, fails=fails, faults=faults})
    redis.call('SET', KEYS[1], rec, 'EX', ARGV[11])
    return {1, rec}
  end
end
local episode = cjson.encode({episode_id=ARGV[12], started_at=ARGV[10],
                              cooldown_until=now + tonumber(ARGV[9]), verdict_id=ARGV[1],
                              trigger=trigger, fails=fails, faults=faults})
redis.call('SET', KEYS[4], episode)
-- the episode consumed these FAILs/FAULTs; the next episode needs a fresh threshold
redis.call('DEL', KEYS[2], KEYS[3])
rec = cjson.encode({state='pending', decision='fire', at=ARGV[10], episode_id=ARGV[12],
                    trigger=trigger, fails=fails, faults=faults})
redis.call('SET', KEYS[1], rec, 'EX', ARGV[11])
return {1, rec}
"""

# KEYS: record, window, episode.
# ARGV: verdict id, captured_at, window_s, fault_count, cooldown_s, now, record ttl,
#       episode id.
# Inspection FAULTs in a sliding window of capture time; at fault_count a manual
# inspection episode opens (cooldown as for stop_line). → as STOP_LINE_LUA.
DEGRADED_LUA = """
local rec = redis.call('GET', KEYS[1])
if rec then return {0, rec} end
local window_s = tonumber(ARGV[3])
local now = tonumber(ARGV[6])
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[1])
local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local top = tonumber(newest[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. tostring(top - window_s))
redis.call('EXPIRE', KEYS[2], math.ceil(window_s) + 3600)
local faults = redis.call('ZCARD', KEYS[2])
if faults < tonumber(ARGV[4]) then return {2, ''} end
local ep = redis.call('GET', KEYS[3])
if ep then
  local e = cjson.decode(ep)
  if now < tonumber(e.cooldown_until) then
    rec = cjson.encode({state='pending', decision='suppressed_cooldown', at=ARGV[6],
                        episode_id=e.episode_id, trigger='inspection_faults', faults=faults})
    redis.call('SET', KEYS[1], rec, 'EX', ARGV[7])
    -- one suppression per fault_count FAULTs, not one per FAULT of a long outage
    redis.call('DEL', KEYS[2])
    return {1, rec}
  end
end
local episode = cjson.encode({episode_id=ARGV[8], started_at=ARGV[6],
                              cooldown_until=now + tonumber(ARGV[5]), verdict_id=ARGV[1],
                              trigger='inspection_faults', faults=faults})
redis.call('SET', KEYS[3], episode)
redis.call('DEL', KEYS[2])
rec = cjson.encode({state='pending', decision='fire', at=ARGV[6], episode_id=ARGV[8],
                    trigger='inspection_faults', faults=faults})
redis.call('SET', KEYS[1], rec, 'EX', ARGV[7])
return {1, rec}
"""

# KEYS: record, outbox, delivery. ARGV: record json, record ttl, delivery id, due ms,
#       then field/value pairs of the delivery hash.
# Queuing and recording happen together, so a redelivery can never queue a ticket twice.
ENQUEUE_LUA = """
local rec = redis.call('GET', KEYS[1])
if rec then return {0, rec} end
if redis.call('EXISTS', KEYS[3]) == 0 then
  local fields = {}
  for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', KEYS[3], unpack(fields))
  redis.call('ZADD', KEYS[2], 'NX', tonumber(ARGV[4]), ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {1, ARGV[1]}
"""

# KEYS[1]: counted offsets hash; KEYS[2..]: per-line counters.
# ARGV: per message "<topic>:<partition>", offset, field. An offset at or below the
# partition's watermark was counted before (a redelivery) and is skipped.
COUNT_LUA = """
local n = 0
for i = 2, #KEYS do
  local j = (i - 2) * 3
  local tp = ARGV[j + 1]
  local off = tonumber(ARGV[j + 2])
  local seen = tonumber(redis.call('HGET', KEYS[1], tp) or '-1')
  if off > seen then
    redis.call('HINCRBY', KEYS[i], ARGV[j + 3], 1)
    redis.call('HSET', KEYS[1], tp, off)
    n = n + 1
  end
end
return n
"""

# KEYS[1]: outbox. ARGV: now ms, lease ms, limit. Due deliveries are leased (their score
# moved past the lease) so a second act process does not send them concurrently; a
# sender that dies mid-request leaves them due again when the lease ends.
CLAIM_DUE_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
end
return ids
"""


class Scripts:
    def __init__(self, client: redis.Redis) -> None:
        self.divert = client.register_script(DIVERT_LUA)
        self.stop_line = client.register_script(STOP_LINE_LUA)
        self.degraded = client.register_script(DEGRADED_LUA)
        self.enqueue = client.register_script(ENQUEUE_LUA)
        self.count = client.register_script(COUNT_LUA)
        self.claim_due = client.register_script(CLAIM_DUE_LUA)


def parse_record(raw: Any) -> dict[str, Any]:
    data = orjson.loads(raw)
    assert isinstance(data, dict)
    return data


# --------------------------------------------------------------------------- readers


def open_episodes(
    client: redis.Redis, prefix: str, line_id: str, workflows: list[str]
) -> dict[str, dict[str, Any]]:
    """Stop episodes of a line not yet resumed, keyed by workflow name."""
    keys = Keys(prefix)
    with redis_errors("reading stop episodes"):
        values = client.mget([keys.episode(w, line_id) for w in workflows]) if workflows else []
    return {w: parse_record(v) for w, v in zip(workflows, values, strict=True) if v is not None}


def outbox_size(client: redis.Redis, prefix: str) -> int:
    with redis_errors("reading the webhook outbox"):
        return int(client.zcard(Keys(prefix).outbox))
