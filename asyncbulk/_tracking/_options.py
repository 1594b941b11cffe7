"""`TrackingOptions`, and the one set of validators every tracking setting goes through."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Final

import attrs

from asyncbulk._exceptions import ValidationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["TrackingOptions", "check_count", "check_id", "check_seconds", "resolve_tracking"]

#: The documented least time between two calls of an ``on_progress`` callback.
PROGRESS_EVERY: Final = 0.5


def check_seconds(name: str, value: object, *, optional: bool) -> float | None:
    """``value`` as seconds > 0 (infinity is None when optional), or a `ValidationError`."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValidationError(name, f"must be a number of seconds > 0, not {value!r}")
    if math.isinf(value):
        return None if optional else float(value)
    return float(value)


def check_count(name: str, value: object, *, least: int) -> int:
    """``value`` as an integer >= ``least``, or a `ValidationError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValidationError(name, f"must be an integer >= {least}, not {value!r}")
    return value


def check_id(name: str, job_id: object) -> str:
    """``job_id`` as a non-empty string, or a `ValidationError` naming ``name``."""
    if not isinstance(job_id, str):
        raise ValidationError(name, f"must be a string, not {type(job_id).__name__}")
    if not job_id.strip():
        raise ValidationError(name, "must not be empty")
    return job_id


def _seconds(instance: TrackingOptions, attribute: attrs.Attribute[float], value: float) -> None:
    del instance
    check_seconds(attribute.name, value, optional=False)


def _in_flight(
    instance: TrackingOptions, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    del instance
    if value is not None:
        check_count(attribute.name, value, least=1)


def _buffer(instance: TrackingOptions, attribute: attrs.Attribute[int], value: int) -> None:
    del instance
    check_count(attribute.name, value, least=0)


@attrs.frozen(kw_only=True)
class TrackingOptions:
    """How a client follows its jobs and tasks: one frozen set of settings for both vendors.

    Pass it as ``tracking=`` to `ChakraClient` or `ZefortClient`, or as ``options=`` to a
    `JobTracker`::

        ZefortClient(key, tracking=TrackingOptions(min_interval=0.5, max_interval=10))

    Attributes:
        min_interval: the first and shortest wait between two polls of a job, in seconds.
        max_interval: the longest wait between two polls of a job, in seconds; a job showing
            no progress is polled 1.5-2x less often each time, up to this.
        sweep_interval: the least time between two reads of a vendor's listing (Zefort's
            pending tasks); when sweeping pays, every job is seen at least this often.
        max_in_flight: polls, listing reads and acknowledgements a tracker runs at once; None
            lets the client choose (half its request slots for Chakra, 8 for Zefort).
        buffer: finished jobs held for a slow consumer inside ``async with`` before detection
            waits for it.

    Raises:
        ValidationError: a setting is out of range (the error names it), or ``max_interval``
            is below ``min_interval``.
    """

    min_interval: float = attrs.field(default=0.25, validator=_seconds)
    max_interval: float = attrs.field(default=5.0, validator=_seconds)
    sweep_interval: float = attrs.field(default=0.5, validator=_seconds)
    max_in_flight: int | None = attrs.field(default=None, validator=_in_flight)
    buffer: int = attrs.field(default=256, validator=_buffer)

    def __attrs_post_init__(self) -> None:
        """Check the settings against each other."""
        if self.max_interval < self.min_interval:
            raise ValidationError("max_interval", "must be >= min_interval")


def resolve_tracking(
    tracking: TrackingOptions | None,
    default: TrackingOptions,
    legacy: Mapping[str, tuple[str, Any]],
) -> TrackingOptions:
    """A client's `TrackingOptions`, from ``tracking=`` or from its deprecated keywords.

    Args:
        tracking: what the caller gave as ``tracking=``, if anything.
        default: the client's options when neither is given.
        legacy: per `TrackingOptions` field, the deprecated keyword's name and the value given
            (None when not given).

    Raises:
        ValidationError: ``tracking`` is not a `TrackingOptions`, is given together with a
            deprecated keyword, or a value is out of range (the error names the keyword used).
    """
    if tracking is not None and not isinstance(tracking, TrackingOptions):
        raise ValidationError("tracking", f"must be a TrackingOptions, not {tracking!r}")
    given = {field: value for field, (_, value) in legacy.items() if value is not None}
    if not given:
        return default if tracking is None else tracking
    names = list(dict.fromkeys(legacy[field][0] for field in given))
    if tracking is not None:
        raise ValidationError(names[0], "is deprecated and cannot be combined with tracking=")
    try:
        options = attrs.evolve(default, **given)
    except ValidationError as exc:
        spelled = {field: name for field, (name, _) in legacy.items()}
        raise ValidationError(spelled.get(exc.field, exc.field), exc.reason) from None
    fields = ", ".join(f"{field}=..." for field in given)
    warnings.warn(
        f"{', '.join(names)}: deprecated; pass tracking=TrackingOptions({fields}) instead",
        DeprecationWarning,
        stacklevel=3,
    )
    return options
