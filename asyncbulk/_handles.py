"""Handles: what a job, a task or a submission is, as a small versioned JSON dict.

A handle names the vendor, the base URL, the account (by a fingerprint, never the credential)
and the ids; a submission's handle also lists its batches with their input positions and states.
It is plain data a caller can store anywhere (``json.dumps``), and the client it came from, or
another client of the same account and host, rebuilds the live object from it
(`ChakraClient.resume`, `ZefortClient.resume`). Reading a handle checks every field, so a
handle from another version, vendor, host or account is refused naming the field.

A client stamps its `Origin` on the objects it builds; the objects never hold the client.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import attrs

from asyncbulk._exceptions import ValidationError

__all__ = [
    "BATCH_STATES",
    "HANDLE_VERSION",
    "BatchRecord",
    "BatchState",
    "Origin",
    "account_of",
    "check_account",
    "fingerprint",
    "job_handle",
    "read_handle",
    "read_submission",
    "submission_handle",
]

#: The version of the handle format this library writes and reads.
HANDLE_VERSION: Final = 1
#: The states of a submission's batch.
BATCH_STATES: Final = ("sending", "accepted", "rejected", "unknown", "not_sent")

BatchState = Literal["sending", "accepted", "rejected", "unknown", "not_sent"]
Kind = Literal["job", "task", "submission"]

# A fixed key: the fingerprint is stable across processes and machines, and specific to
# asyncbulk, so it matches no digest of the same credential computed elsewhere.
_FINGERPRINT_KEY: Final = b"asyncbulk account fingerprint v1"
_FINGERPRINT_BYTES: Final = 16
_ID_FIELDS: Final[Mapping[str, str]] = {
    "job": "job_id",
    "task": "task_id",
    "submission": "submission_id",
}


def fingerprint(vendor: str, credential: str) -> str:
    """A stable, irreversible name for the account a credential belongs to.

    An HMAC-SHA256 under a fixed key over the vendor and the credential, truncated to 16 bytes
    and written in hex: the same credential gives the same fingerprint in every process, and
    the fingerprint does not give the credential back.

    Args:
        vendor: ``"chakra"`` or ``"zefort"``.
        credential: the token or API key.
    """
    message = f"{vendor}\x00{credential}".encode()
    return hmac.new(_FINGERPRINT_KEY, message, hashlib.sha256).digest()[:_FINGERPRINT_BYTES].hex()


_NO_ACCOUNT: Final = (
    "is needed when the credential is a function: a rotating credential does not say which "
    "account it belongs to, so pass account= (any stable name of the account) to make, resume "
    "or journal handles"
)


def account_of(vendor: str, credential: object, account: str | None) -> str:
    """The account fingerprint of a client: from ``account`` when given, else from the credential.

    A credential given as a function changes when it rotates, so it names no account: without
    ``account`` the fingerprint is empty, and handles and journals refuse to work (naming
    ``account``) rather than mix accounts.

    Raises:
        ValidationError: ``account`` is given but is not a non-empty string.
    """
    if account is not None:
        if not isinstance(account, str) or not account.strip():
            raise ValidationError("account", "must be a non-empty string")
        return fingerprint(vendor, f"account\x00{account}")
    if isinstance(credential, str):
        return fingerprint(vendor, credential)
    return ""


def check_account(origin: Origin) -> None:
    """Refuse to make or read handles for a client whose account is unknown.

    Raises:
        ValidationError: naming ``account``.
    """
    if not origin.account:
        raise ValidationError("account", _NO_ACCOUNT)


@attrs.frozen(kw_only=True)
class Origin:
    """Where an object comes from: vendor, base URL and account fingerprint, no credential.

    Attributes:
        vendor: ``"chakra"`` or ``"zefort"``.
        base_url: the client's base URL, as the client normalised it.
        account: the fingerprint of the client's credential (see `fingerprint`).
    """

    vendor: str
    base_url: str
    account: str

    def stamp(self, kind: Kind) -> dict[str, Any]:
        """The fields every handle from this origin starts with.

        Raises:
            ValidationError: the account is unknown (a credential function without ``account=``).
        """
        check_account(self)
        return {
            "asyncbulk_handle": HANDLE_VERSION,
            "vendor": self.vendor,
            "base_url": self.base_url,
            "account": self.account,
            "kind": kind,
        }


@attrs.frozen(kw_only=True)
class BatchRecord:
    """One batch of a submission: the input positions it carries and what became of it.

    Attributes:
        start: the first input position of the batch.
        stop: one past its last input position (the range is half-open).
        state: ``sending``, ``accepted``, ``rejected``, ``unknown`` or ``not_sent``.
        job_id: the job or task id the server gave when it accepted the batch (Chakra may
            accept one without an id).
        error: why the batch failed or why its outcome is unknown.
    """

    start: int
    stop: int
    state: BatchState
    job_id: str | None = None
    error: str | None = None

    @property
    def positions(self) -> range:
        """The input positions, as a range."""
        return range(self.start, self.stop)

    def to_json(self) -> dict[str, Any]:
        """The batch as a handle lists it."""
        return {
            "start": self.start,
            "stop": self.stop,
            "state": self.state,
            "job_id": self.job_id,
            "error": self.error,
        }


def job_handle(origin: Origin | None, kind: Literal["job", "task"], job_id: str) -> dict[str, Any]:
    """The handle of one job or task.

    Raises:
        ValidationError: the object was not built by a client, so where it lives is unknown.
    """
    if origin is None:
        raise ValidationError(
            "handle", f"this {kind} was not built by a client: its base URL and account are unknown"
        )
    return {**origin.stamp(kind), _ID_FIELDS[kind]: job_id}


def submission_handle(
    origin: Origin,
    *,
    submission_id: str,
    target: str,
    operation: str,
    batches: Sequence[BatchRecord],
) -> dict[str, Any]:
    """The handle of a submission: where it went and every batch with its state.

    Args:
        origin: the client's origin.
        submission_id: the submission's id, as its journal knows it.
        target: what it changed (a Chakra procedure, Zefort's ``contracts``).
        operation: ``update`` or ``create``.
        batches: its batches, in input order.
    """
    return {
        **origin.stamp("submission"),
        "submission_id": submission_id,
        "target": target,
        "operation": operation,
        "batches": [batch.to_json() for batch in batches],
    }


_BASE_FIELDS: Final = ("asyncbulk_handle", "vendor", "base_url", "account", "kind")
_SUBMISSION_FIELDS: Final = ("submission_id", "target", "operation", "batches")
_BATCH_FIELDS: Final = ("start", "stop", "state", "job_id", "error")


def _text(handle: Mapping[str, Any], field: str, where: str = "") -> str:
    value = handle.get(field)
    if type(value) is not str or not value.strip():
        raise ValidationError(f"{where}{field}", f"must be a non-empty string, not {value!r}")
    return value


def _check_keys(handle: Mapping[str, Any], fields: Sequence[str], where: str = "") -> None:
    for field in fields:
        if field not in handle:
            raise ValidationError(f"{where}{field}", "is missing")
    for field in handle:
        if field not in fields:
            raise ValidationError(f"{where}{field}", "is not a field of this handle")


def read_handle(
    handle: object, origin: Origin, kinds: Sequence[Kind]
) -> tuple[Kind, dict[str, Any]]:
    """Check a handle against the client that reads it, and return its kind and fields.

    Args:
        handle: the handle, as `json.loads` gave it back.
        origin: the reading client's origin: vendor, base URL and account must match.
        kinds: the kinds this client rebuilds.

    Raises:
        ValidationError: naming the field that is missing, malformed, of another version, or
            names another vendor, host, account or a kind this client does not rebuild.
    """
    if not isinstance(handle, Mapping):
        raise ValidationError("handle", f"must be a mapping, not {type(handle).__name__}")
    for field in _BASE_FIELDS:
        if field not in handle:
            raise ValidationError(field, "is missing")
    version = handle["asyncbulk_handle"]
    if type(version) is not int or version != HANDLE_VERSION:
        raise ValidationError(
            "asyncbulk_handle",
            f"handle version {version!r} is not {HANDLE_VERSION}, the one this library reads",
        )
    check_account(origin)
    for field in ("vendor", "base_url", "account"):
        value = _text(handle, field)
        expected = getattr(origin, field)
        if value != expected:
            raise ValidationError(
                field, f"the handle is for {value!r}, this client is {expected!r}"
            )
    kind = handle["kind"]
    if kind not in kinds:
        raise ValidationError(
            "kind", f"{kind!r} is not a kind this client resumes ({', '.join(kinds)})"
        )
    fields = (*_BASE_FIELDS, *(_SUBMISSION_FIELDS if kind == "submission" else (_ID_FIELDS[kind],)))
    _check_keys(handle, fields)
    if kind != "submission":
        _text(handle, _ID_FIELDS[kind])
    return kind, dict(handle)


def read_submission(handle: Mapping[str, Any]) -> tuple[BatchRecord, ...]:
    """The batches of a submission handle already read by `read_handle`, checked.

    Raises:
        ValidationError: naming the field (``batches[2].state``) that is malformed, or batches
            that are out of order or overlap.
    """
    for field in ("submission_id", "target", "operation"):
        _text(handle, field)
    batches = handle["batches"]
    if not isinstance(batches, list):
        raise ValidationError("batches", f"must be a list, not {type(batches).__name__}")
    records: list[BatchRecord] = []
    end = 0
    for index, batch in enumerate(batches):
        records.append(_read_batch(batch, f"batches[{index}]", end))
        end = records[-1].stop
    return tuple(records)


def _read_batch(batch: object, where: str, end: int) -> BatchRecord:
    if not isinstance(batch, Mapping):
        raise ValidationError(where, "must be a mapping")
    where += "."
    _check_keys(batch, _BATCH_FIELDS, where)
    start, stop = batch["start"], batch["stop"]
    if type(start) is not int or start < end:
        raise ValidationError(f"{where}start", f"must be an integer >= {end}, not {start!r}")
    if type(stop) is not int or stop <= start:
        raise ValidationError(f"{where}stop", f"must be an integer > {start}, not {stop!r}")
    state = batch["state"]
    if state not in BATCH_STATES:
        raise ValidationError(
            f"{where}state", f"must be one of {', '.join(BATCH_STATES)}, not {state!r}"
        )
    job_id, error = batch["job_id"], batch["error"]
    if job_id is not None:
        _text(batch, "job_id", where)
    if job_id is not None and state != "accepted":
        raise ValidationError(f"{where}job_id", f"a batch {state} has no job id")
    if error is not None and type(error) is not str:
        raise ValidationError(f"{where}error", f"must be a string or null, not {error!r}")
    return BatchRecord(start=start, stop=stop, state=state, job_id=job_id, error=error)
