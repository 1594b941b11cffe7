"""Rate limits in front of the simulated Zefort API, as an independent server enforces them.

A middleware, placed inside the simulator's own (so refused requests are recorded like any
other), keyed by the `Authorization` header (one budget per credential), configured per run
through the admin app (`POST /admin/limit`; an empty object turns it off):

- `rate`, `burst`: a token bucket of `burst` tokens refilled at `rate` per second; a request
  that finds no token is refused.
- `sporadic`: the probability that any request is refused, whatever the bucket holds.
- `once`: the first request after configuring is refused with this `Retry-After` instead.
- `retry_after`: the `Retry-After` (seconds) of every other refusal (default 1).

A refusal is `429` in Zefort's error format with the `Retry-After` header. The limiter also
notes when it admitted each request (wall clock), for the share of the allowed rate a client
used.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from asyncbulk.testing import make_zefort_app, zefort_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp.typedefs import Handler

    from asyncbulk.testing import Simulator


class Limiter:
    """The per-credential buckets, the sporadic refusals and what was admitted."""

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        """Off until configured; `clock` (seconds) refills the buckets."""
        self._seed = seed
        self._clock = clock
        self.configure({})

    def configure(self, spec: dict[str, Any]) -> None:
        """Replace the rules (see the module docstring) and start counting afresh."""
        self.rate = float(spec.get("rate") or 0.0)
        self.burst = float(spec.get("burst") or 1.0)
        self.sporadic = float(spec.get("sporadic") or 0.0)
        self.once: float | None = spec.get("once")
        self.retry_after = float(spec.get("retry_after", 1.0))
        self.active = bool(self.rate or self.sporadic or self.once is not None)
        self._random = random.Random(self._seed)
        self._buckets: dict[str, tuple[float, float]] = {}
        self.admitted_at: list[float] = []
        self.refused = 0
        #: Refusals by method and route ("GET /api/tasks/"): which requests paid for them.
        self.refused_by: dict[str, int] = {}

    def _refuse(self, request: web.Request, retry_after: float) -> web.Response:
        self.refused += 1
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        key = f"{request.method} {route}"
        self.refused_by[key] = self.refused_by.get(key, 0) + 1
        response = zefort_error(429, "Request was throttled.")
        response.headers["Retry-After"] = format(retry_after, "g")
        return response

    def _take(self, key: str) -> bool:
        """Take a token from the credential's bucket; False when it is empty."""
        now = self._clock()
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse what the rules refuse; pass the rest to the simulator."""
        if self.active:
            if self.once is not None:
                once, self.once = self.once, None
                return self._refuse(request, once)
            if self.sporadic and self._random.random() < self.sporadic:
                return self._refuse(request, self.retry_after)
            if self.rate and not self._take(request.headers.get("Authorization", "")):
                return self._refuse(request, self.retry_after)
            self.admitted_at.append(time.time())
        return await handler(request)

    def report(self) -> dict[str, Any]:
        """The rules and the counts, with when each admitted request came."""
        return {
            "rate": self.rate,
            "burst": self.burst,
            "sporadic": self.sporadic,
            "admitted": len(self.admitted_at),
            "refused": self.refused,
            "refused_by": self.refused_by,
            "admitted_at": self.admitted_at,
        }


def limited_zefort_app(sim: Simulator, limiter: Limiter) -> web.Application:
    """The simulator's Zefort API (same data, same records) behind the limiter."""
    app = make_zefort_app(sim.zefort, faults=sim.faults)
    # Inside the simulator's outermost middleware, which records every request and its status:
    # a refusal is a request the server received, like any other.
    app.middlewares.insert(1, limiter.middleware)
    return app
