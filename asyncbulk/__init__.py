"""asyncbulk: push changes through vendors' asynchronous bulk APIs and follow every job.

The clients (`ChakraClient`, `ZefortClient`) submit bulk changes, stream background-job entries
and track jobs and tasks; `asyncbulk.testing` simulates both vendors for tests.
"""

from asyncbulk._exceptions import (
    APIError,
    AsyncBulkError,
    AuthenticationError,
    ClientClosedError,
    JobTimeoutError,
    NotFoundError,
    OutcomeUnknownError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    SubmissionError,
    TransportError,
    ValidationError,
)
from asyncbulk._outcome import Outcome, outcome_of
from asyncbulk._retry import RetryPolicy
from asyncbulk._session import RequestStats, Timeouts
from asyncbulk._tracker import JobSource, JobTracker, TrackerStats, TrackIterator
from asyncbulk._version import __version__
from asyncbulk.chakra import (
    ENTRY_STATUSES,
    PROCESS_STATUSES,
    BackgroundJob,
    BatchError,
    BatchOutcome,
    BatchState,
    BulkSubmission,
    ChakraClient,
    ChakraJobSource,
    FailedEntry,
    JobEntries,
    JobEntry,
    JobEntryPages,
    PositionOutcome,
    ProcessCreate,
    ProcessUpdate,
    SubmissionSummary,
    make_chakra_converter,
)
from asyncbulk.zefort import (
    ZefortClient,
    ZefortTask,
    ZefortTaskListing,
    ZefortTaskSource,
    make_zefort_converter,
)

__all__ = [
    "ENTRY_STATUSES",
    "PROCESS_STATUSES",
    "APIError",
    "AsyncBulkError",
    "AuthenticationError",
    "BackgroundJob",
    "BatchError",
    "BatchOutcome",
    "BatchState",
    "BulkSubmission",
    "ChakraClient",
    "ChakraJobSource",
    "ClientClosedError",
    "FailedEntry",
    "JobEntries",
    "JobEntry",
    "JobEntryPages",
    "JobSource",
    "JobTimeoutError",
    "JobTracker",
    "NotFoundError",
    "Outcome",
    "OutcomeUnknownError",
    "PositionOutcome",
    "ProcessCreate",
    "ProcessUpdate",
    "ProtocolError",
    "RateLimitedError",
    "RequestStats",
    "RetryPolicy",
    "ServerError",
    "SubmissionError",
    "SubmissionSummary",
    "Timeouts",
    "TrackIterator",
    "TrackerStats",
    "TransportError",
    "ValidationError",
    "ZefortClient",
    "ZefortTask",
    "ZefortTaskListing",
    "ZefortTaskSource",
    "__version__",
    "make_chakra_converter",
    "make_zefort_converter",
    "outcome_of",
]
