"""asyncbulk.redis: one rate limit shared by every process of a vendor account, through Redis.

Needs the ``redis`` extra (``pip install 'asyncbulk[redis]'``). `RedisRateLimit` implements
the `SharedLimiter` protocol: one atomic script call per request at most, a shared pause when
the vendor answers 429, and a local cache of reserved slots.
"""

from asyncbulk.redis._limiter import RedisRateLimit, RedisRateLimitStats, SharedLimiter

__all__ = ["RedisRateLimit", "RedisRateLimitStats", "SharedLimiter"]
