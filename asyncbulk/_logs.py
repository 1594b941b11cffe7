"""The facts of a log record as ``extra=`` fields, the same names wherever asyncbulk logs.

A structured handler (JSON, logfmt) reads them as attributes of the record: ``vendor``,
``method``, ``path``, ``status``, ``attempt``, ``ms``, ``job_id`` (the session's records), and
here ``job_kind``, ``error`` (the error's class) and ``count`` where they apply. A field that
does not apply is absent or None; the message is what it always was.
"""

from __future__ import annotations

from typing import Any

from yarl import URL

__all__ = ["log_fields"]


def log_fields(
    vendor: str | None,
    *,
    job_id: str | None = None,
    error: BaseException | None = None,
    **more: Any,
) -> dict[str, Any]:
    """The fields of one record; an error adds its class, and its method, path and status."""
    fields: dict[str, Any] = {"vendor": vendor, "job_id": job_id, **more}
    if error is not None:
        fields["error"] = type(error).__name__
        method = getattr(error, "method", None)
        if method is not None:
            fields["method"] = method
        url = getattr(error, "url", None)
        if isinstance(url, str) and url:
            try:
                fields["path"] = URL(url, encoded=True).raw_path
            except ValueError:
                fields["path"] = None
        status = getattr(error, "status", None)
        if isinstance(status, int):
            fields["status"] = status
    return fields
