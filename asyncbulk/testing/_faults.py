"""Fault injection: rules that make a simulated server slow, failing, rude or silent.

Each request is checked against the rules in the order they were added. A rule matches when its
filters (vendor, route template, method) match and it has not used up its `times`; it then fires
with probability `rate`, from a random generator seeded by the simulator's `seed`, so the same
rules and the same sequence of requests inject the same faults. Every firing "latency" rule adds
its delay; the first firing rule of any other kind decides what happens to the request, and the
rules after it are not rolled for.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Literal, get_args

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

from ._limits import RetryAfterForm, check_form

FaultKind = Literal[
    "latency",
    "status",
    "proxy",
    "drop_before",
    "drop_after",
    "malformed",
    "empty",
    "slow_body",
    "redirect",
    "oversized",
]
_KINDS = frozenset(get_args(FaultKind))
_VENDORS = frozenset({"chakra", "zefort"})

#: The total time a "slow_body" fault spreads the response body over, unless `delay` says.
SLOW_BODY_SECONDS = 1.0
#: The size of an "oversized" answer, unless `size` says: more than any client should read.
OVERSIZED_BYTES = 100 * 1024 * 1024


def _check_kind(_: object, __: attrs.Attribute[str], kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"unknown fault kind {kind!r}: expected one of {sorted(_KINDS)}")


def _check_rate(_: object, __: attrs.Attribute[float], rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be within [0, 1], got {rate!r}")


def _upper(method: str | None) -> str | None:
    return None if method is None else method.upper()


def _delay(value: float | tuple[float, float] | None) -> float | tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        low, high = (float(v) for v in value)
        if not 0 <= low <= high:
            raise ValueError(f"a delay range needs 0 <= low <= high, got {value!r}")
        return (low, high)
    if value < 0:
        raise ValueError(f"delay cannot be negative, got {value!r}")
    return float(value)


@attrs.frozen(eq=False)
class Fault:
    """A rule that injects one kind of fault into the requests it matches.

    Kinds:
        - "latency": wait `delay` seconds (a number, or a (low, high) range drawn uniformly)
          before handling the request; other rules still apply.
        - "status": answer `status` without handling the request, in the vendor's error format;
          with `retry_after` the answer carries a `Retry-After` header and `status` defaults to 429,
          otherwise it defaults to 503.
        - "proxy": a proxy in front of the app answers `status` (502 by default) with its own
          HTML page; the app never sees the request, so nothing is done.
        - "drop_before": close the connection without handling the request.
        - "drop_after": handle the request fully (a job or task is created), then close the
          connection without answering: the response is lost.
        - "malformed": handle the request, then answer 200 with a body that is not valid JSON.
        - "empty": handle the request, then answer 200 with the body ``{}`` (what Chakra's
          reference shows for a bulk create): the work is done, and no job id is named.
        - "slow_body": handle the request, then send the response body in pieces spread over
          `delay` seconds (1 s by default).
        - "redirect": answer `status` (307 by default) with ``Location: <location>`` without
          handling the request; with no `location`, to the same path and query on the other
          vendor's server (another origin, whose records show whether anything reached it).
        - "oversized": answer 200 with a JSON body of `size` bytes (100 MiB by default), streamed
          without a Content-Length, without handling the request. `Records.oversized_bytes`
          counts what actually went out, so a test can tell a client stopped reading.

    Rules are compared by identity: two equal-looking rules are two rules.

    Args:
        kind: One of the kinds above.
        rate: Probability that a matching request gets the fault, 0 to 1.
        route: Only requests whose route template is this, e.g. "/api/tasks/{id}/".
        method: Only requests with this HTTP method.
        vendor: Only requests to this vendor's server: "chakra" or "zefort".
        status: The status a "status" (4xx, 5xx), "proxy" (5xx) or "redirect" (3xx) fault answers.
        retry_after: Seconds sent in `Retry-After` by a "status" fault.
        retry_after_form: How a "status" fault writes `Retry-After`: "seconds" (the default),
            "http-date", "absent", "garbage" or "huge" (a day); any form but "seconds" makes
            `status` default to 429.
        location: Where a "redirect" fault points.
        size: The body size of an "oversized" fault, in bytes.
        delay: Seconds for "latency" (required) and "slow_body".
        times: Fire at most this many times (then the rule stays but never fires again).

    Raises:
        ValueError: An argument is out of range or does not fit the kind.
    """

    kind: FaultKind = attrs.field(validator=_check_kind)
    rate: float = attrs.field(default=1.0, kw_only=True, validator=_check_rate)
    route: str | None = attrs.field(default=None, kw_only=True)
    method: str | None = attrs.field(default=None, kw_only=True, converter=_upper)
    vendor: Literal["chakra", "zefort"] | None = attrs.field(default=None, kw_only=True)
    status: int | None = attrs.field(default=None, kw_only=True)
    retry_after: float | None = attrs.field(
        default=None, kw_only=True, converter=attrs.converters.optional(float)
    )
    delay: float | tuple[float, float] | None = attrs.field(
        default=None, kw_only=True, converter=_delay
    )
    times: int | None = attrs.field(default=None, kw_only=True)
    retry_after_form: RetryAfterForm = attrs.field(
        default="seconds", kw_only=True, validator=check_form
    )
    location: str | None = attrs.field(default=None, kw_only=True)
    size: int | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        """Check the arguments that depend on each other."""
        if self.vendor is not None and self.vendor not in _VENDORS:
            raise ValueError(f"vendor must be 'chakra' or 'zefort', got {self.vendor!r}")
        if self.kind == "latency" and self.delay is None:
            raise ValueError("a latency fault needs a delay")
        if self.kind == "redirect":
            if self.status is not None and not 300 <= self.status <= 399:  # noqa: PLR2004
                raise ValueError(f"a redirect status must be 3xx, got {self.status!r}")
        elif self.status is not None and not 400 <= self.status <= 599:  # noqa: PLR2004
            raise ValueError(f"a fault status must be 4xx or 5xx, got {self.status!r}")
        if self.size is not None and self.size < 0:
            raise ValueError(f"size cannot be negative, got {self.size!r}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after cannot be negative, got {self.retry_after!r}")
        if self.times is not None and self.times < 0:
            raise ValueError(f"times cannot be negative, got {self.times!r}")

    @property
    def answer_status(self) -> int:
        """The status the fault answers: `status`, else 307 (redirect), 502 (proxy), 429 or 503.

        429 when a "status" fault has a `retry_after`, or a `retry_after_form` other than
        "seconds".
        """
        if self.status is not None:
            return self.status
        if self.kind == "redirect":
            return 307
        if self.kind == "proxy":
            return 502
        if self.retry_after is not None or self.retry_after_form != "seconds":
            return 429
        return 503

    def matches(self, vendor: str, method: str, route: str | None) -> bool:
        """Tell whether the rule's filters select this request."""
        return (
            (self.vendor is None or self.vendor == vendor)
            and (self.method is None or self.method == method)
            and (self.route is None or self.route == route)
        )


@attrs.frozen
class FaultPlan:
    """What the fault rules decided for one request.

    Attributes:
        latency: Seconds to wait before going on (the sum of every firing latency rule).
        fault: The rule that decides the outcome, or None to answer normally.
        fired: The kinds of every rule that fired, in order.
    """

    latency: float = 0.0
    fault: Fault | None = None
    fired: tuple[str, ...] = ()


class FaultSet:
    """The fault rules of a simulator, which a test may change while it runs.

    Iterating yields the rules in order; `fired(rule)` tells how often a rule fired.
    """

    def __init__(self, faults: Iterable[Fault] = (), *, seed: int = 0) -> None:
        """Hold `faults`, drawing every random decision from a generator seeded with `seed`."""
        self._random = random.Random(seed)
        self._rules: list[Fault] = []
        self._fired: dict[int, int] = {}
        for fault in faults:
            self.add(fault)

    def __repr__(self) -> str:
        """List the rules."""
        return f"FaultSet({self._rules!r})"

    def __iter__(self) -> Iterator[Fault]:
        """Iterate over the rules, in order."""
        return iter(list(self._rules))

    def __len__(self) -> int:
        """Return the number of rules."""
        return len(self._rules)

    def __contains__(self, fault: object) -> bool:
        """Tell whether `fault` is one of the rules (by identity)."""
        return any(rule is fault for rule in self._rules)

    def add(self, fault: Fault) -> Fault:
        """Add a rule after the others and return it (to remove it later)."""
        if not isinstance(fault, Fault):
            raise TypeError(f"expected a Fault, got {fault!r}")
        self._rules.append(fault)
        self._fired.setdefault(id(fault), 0)
        return fault

    def remove(self, fault: Fault) -> None:
        """Remove a rule.

        Raises:
            ValueError: The rule is not in the set.
        """
        for index, rule in enumerate(self._rules):
            if rule is fault:
                del self._rules[index]
                return
        raise ValueError(f"{fault!r} is not one of the rules")

    def clear(self) -> None:
        """Remove every rule."""
        self._rules.clear()

    def fired(self, fault: Fault) -> int:
        """Return how many times `fault` fired (0 for a rule never added)."""
        return self._fired.get(id(fault), 0)

    def plan(self, vendor: str, method: str, route: str | None) -> FaultPlan:
        """Decide which faults a request gets (used by the simulated servers)."""
        if not self._rules:
            return FaultPlan()
        latency = 0.0
        decisive: Fault | None = None
        fired: list[str] = []
        for rule in self._rules:
            if decisive is not None and rule.kind != "latency":
                continue
            if not rule.matches(vendor, method, route):
                continue
            if rule.times is not None and self._fired[id(rule)] >= rule.times:
                continue
            if rule.rate < 1.0 and self._random.random() >= rule.rate:
                continue
            self._fired[id(rule)] += 1
            fired.append(rule.kind)
            if rule.kind == "latency":
                latency += self._seconds(rule.delay)
            else:
                decisive = rule
        return FaultPlan(latency, decisive, tuple(fired))

    def seconds(self, fault: Fault, default: float) -> float:
        """Draw the delay of `fault` (its `delay`, or `default` when it has none)."""
        return default if fault.delay is None else self._seconds(fault.delay)

    def _seconds(self, delay: float | tuple[float, float] | None) -> float:
        if delay is None:
            return 0.0
        if isinstance(delay, tuple):
            return self._random.uniform(*delay)
        return delay
