"""The Lua script every process sharing a rate limit runs: GCRA slots and the shared pause.

One script, two modes, so a request costs one atomic call at most and the pause is read by the
same call that reserves:

- ``reserve``: ARGV = mode, emission interval, tolerance (burst x interval), tokens wanted,
  longest wait accepted (all in microseconds except the count). When the pause key lives, it
  returns ``{0, 0, pause}``; when the first slot would come later than the longest wait, it
  reserves nothing and returns ``{0, wait, 0}``; otherwise it reserves the tokens and returns
  ``{count, first, 0}``: token ``i`` may be spent ``max(0, first + i * interval)`` after the
  call (offsets from the server's clock at the call, so the processes' clocks never matter).
- ``pause``: ARGV = mode, pause length; extends the pause key to that length from now, never
  shortens it. Returns the pause in force.

KEYS = the bucket's key (its theoretical arrival time, in microseconds of the server's clock)
and the pause key. Both carry one hash tag, so they live in one cluster slot.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SCRIPT"]

SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if ARGV[1] == 'pause' then
  local length = tonumber(ARGV[2])
  local left = redis.call('PTTL', KEYS[2]) * 1000
  if length > left then
    redis.call('SET', KEYS[2], '1', 'PX', math.ceil(length / 1000))
    return length
  end
  return left
end
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then
  return {0, 0, paused * 1000}
end
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
local longest = tonumber(ARGV[5])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local first = tat - now + interval - tolerance
if first > longest then
  return {0, first, 0}
end
tat = tat + wanted * interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return {wanted, first, 0}
"""
