"""HTTP plumbing shared by both simulated vendors: JSON bodies, records, fault injection."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._faults import OVERSIZED_BYTES
from ._limits import retry_after_header
from ._records import RequestRecord, Vendor, wall_now

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp.typedefs import Handler, Middleware

    from ._faults import Fault, FaultSet
    from ._limits import TokenBucket
    from ._records import Records

    ErrorResponder = Callable[[int, str], web.Response]

_SLOW_BODY_PIECES = 10
_OVERSIZED_CHUNK = 64 * 1024
#: Where a "redirect" fault points when the app does not know the other vendor's server.
ELSEWHERE = "http://elsewhere.invalid"
# One encoder for every body: json.dumps with options would build a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> bytes:
    """Encode a JSON body compactly."""
    return _ENCODER.encode(value).encode()


def dumps_text(value: Any) -> str:
    """Encode a JSON value compactly as text: a fragment of a body that `dumps` would encode."""
    return _ENCODER.encode(value)


#: Encode a string as a JSON string, exactly as `dumps_text` does: the very function its encoder
#: calls for strings (without the encoder's Python-level dispatch, which costs more than it does).
quote: Callable[[str], str] = json.encoder.encode_basestring


def json_response(value: Any, *, status: int = 200) -> web.Response:
    """Answer `value` as JSON."""
    return encoded_response(dumps(value), status=status)


def encoded_response(body: bytes, *, status: int = 200) -> web.Response:
    """Answer a JSON body that is already encoded."""
    return web.Response(body=body, status=status, content_type="application/json")


def route_template(request: web.Request) -> str | None:
    """Return the template of the route that matched `request` ("/api/tasks/{id}/"), if any."""
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


def observe(  # noqa: PLR0917 - private to the two vendor apps
    vendor: Vendor,
    records: Records,
    faults: FaultSet | None,
    error: ErrorResponder,
    rate_limit: TokenBucket | None = None,
    elsewhere: Callable[[], str] | None = None,
) -> Middleware:
    """Make the outermost middleware of a vendor app: limit, inject faults, record the request.

    Args:
        vendor: Whose app this is.
        records: Where to record each request.
        faults: The fault rules, or None for none.
        error: Makes an error answer in the vendor's format from a status and a message.
        rate_limit: The token bucket per credential, or None for no limit.
        elsewhere: The base URL of another origin, for "redirect" faults with no location.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        at = wall_now()
        route = route_template(request)
        wait = None
        if rate_limit is not None:
            wait = rate_limit.admit(vendor, request.headers.get("Authorization", ""))
        plan = None
        if wait is None and faults is not None:
            plan = faults.plan(vendor, request.method, route)
        fault = None if plan is None else plan.fault
        status: int | None = None
        response: web.StreamResponse
        fired = None if plan is None or not plan.fired else plan.fired[-1]
        try:
            if wait is not None:
                assert rate_limit is not None  # noqa: S101 - a wait comes from the bucket
                fired = "rate_limit"
                response = error(429, "Request was throttled.")
                header = retry_after_header(wait, rate_limit.retry_after_form)
                if header is not None:
                    response.headers["Retry-After"] = header
                status = 429
            else:
                if plan is not None and plan.latency > 0:
                    await asyncio.sleep(plan.latency)
                if fault is None:
                    response = await handler(request)
                    status = response.status
                else:
                    assert faults is not None  # noqa: S101 - a plan with a fault comes from faults
                    target = (elsewhere or (lambda: ELSEWHERE))()
                    response, status = await _inject(
                        request, handler, fault, faults, error, target, records
                    )
        finally:
            records.record_request(
                RequestRecord(
                    vendor=vendor,
                    method=request.method,
                    path=request.raw_path.partition("?")[0],
                    query=tuple(request.query.items()),
                    route=route,
                    status=status,
                    fault=fired,
                    at=at,
                )
            )
        return response

    return middleware


async def _inject(  # noqa: C901, PLR0911, PLR0917 - one answer per fault kind; one caller
    request: web.Request,
    handler: Handler,
    fault: Fault,
    faults: FaultSet,
    error: ErrorResponder,
    elsewhere: str,
    records: Records,
) -> tuple[web.StreamResponse, int | None]:
    if fault.kind == "status":
        refusal = error(fault.answer_status, "simulated fault")
        if fault.retry_after is not None or fault.retry_after_form != "seconds":
            header = retry_after_header(fault.retry_after, fault.retry_after_form)
            if header is not None:
                refusal.headers["Retry-After"] = header
        return refusal, refusal.status
    if fault.kind == "redirect":
        location = fault.location or f"{elsewhere}{request.raw_path}"
        moved = web.Response(status=fault.answer_status, headers={"Location": location})
        return moved, moved.status
    if fault.kind == "oversized":
        size = OVERSIZED_BYTES if fault.size is None else fault.size
        return await _oversized(request, size, records), 200
    if fault.kind == "proxy":
        page = b"<html><body><h1>Bad Gateway</h1><p>simulated proxy</p></body></html>"
        return web.Response(body=page, status=fault.answer_status, content_type="text/html"), (
            fault.answer_status
        )
    if fault.kind == "drop_before":
        _drop(request)
        return web.Response(status=500), None
    response = await handler(request)
    if fault.kind == "drop_after":
        _drop(request)
        return response, None
    if fault.kind == "empty":
        return encoded_response(b"{}"), 200
    body = response.body if isinstance(response, web.Response) else None
    raw = body if isinstance(body, bytes) else b""
    if fault.kind == "malformed":
        # Half a JSON document, then text no parser accepts: a truncated or corrupted answer.
        garbage = raw[: len(raw) // 2] + b"<!-- simulated malformed body"
        return web.Response(body=garbage, status=200, content_type="application/json"), 200
    return await _slow(request, response, raw, faults.seconds(fault, 1.0)), response.status


async def _oversized(request: web.Request, size: int, records: Records) -> web.StreamResponse:
    """A JSON array of ``size`` bytes, streamed in chunks, until the client stops reading."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    filler = b"0," * (_OVERSIZED_CHUNK // 2)
    try:
        await response.write(b"[")
        left = max(0, size - 3)
        while left > 0:
            piece = filler[: min(left, len(filler))]
            await response.write(piece)
            records.oversized_bytes += len(piece)
            left -= len(piece)
        await response.write(b"0]")
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        # The client closed the connection: it read no further.
        pass
    return response


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


async def _slow(
    request: web.Request, response: web.StreamResponse, body: bytes, seconds: float
) -> web.StreamResponse:
    slow = web.StreamResponse(status=response.status, headers=response.headers)
    slow.content_length = len(body)
    await slow.prepare(request)
    step = max(1, -(-len(body) // _SLOW_BODY_PIECES))
    try:
        for start in range(0, len(body), step):
            await slow.write(body[start : start + step])
            await asyncio.sleep(seconds / _SLOW_BODY_PIECES)
        await slow.write_eof()
    except ConnectionError:
        # The client gave up on the slow body; nothing is left to answer.
        pass
    return slow


def error_middleware(error: ErrorResponder) -> Middleware:
    """Make a middleware that turns aiohttp's HTTP exceptions into the vendor's error format."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:  # noqa: PLR2004 - redirects and successes pass through
                raise
            response = error(exc.status, exc.text or exc.reason)
            for name in ("Allow", "WWW-Authenticate", "Retry-After"):
                if name in exc.headers:
                    response.headers[name] = exc.headers[name]
            return response

    return middleware


async def read_json(request: web.Request) -> tuple[bytes, Any]:
    """Read the request body and parse it as JSON.

    Raises:
        web.HTTPBadRequest: The body is not valid JSON (its text says why).
    """
    raw = await request.read()
    try:
        return raw, json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"JSON parse error - {exc}") from exc
