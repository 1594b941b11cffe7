"""ChakraHQ: bulk process updates and creates, background jobs, and their entries.

`ChakraClient` is the way in; `ProcessUpdate` and `ProcessCreate` are what it sends;
`BackgroundJob`, `JobEntry`, `BulkSubmission` and `SubmissionSummary` are what comes back.
"""

from asyncbulk.chakra._client import ChakraClient, ChakraJobSource, JobEntries, JobEntryPages
from asyncbulk.chakra._models import (
    ENTRY_STATUSES,
    PROCESS_STATUSES,
    BackgroundJob,
    JobEntry,
    ProcessCreate,
    ProcessUpdate,
    make_chakra_converter,
)
from asyncbulk.chakra._submission import (
    BatchError,
    BatchOutcome,
    BatchState,
    BulkSubmission,
    FailedEntry,
    PositionOutcome,
    SubmissionSummary,
)

__all__ = [
    "ENTRY_STATUSES",
    "PROCESS_STATUSES",
    "BackgroundJob",
    "BatchError",
    "BatchOutcome",
    "BatchState",
    "BulkSubmission",
    "ChakraClient",
    "ChakraJobSource",
    "FailedEntry",
    "JobEntries",
    "JobEntry",
    "JobEntryPages",
    "PositionOutcome",
    "ProcessCreate",
    "ProcessUpdate",
    "SubmissionSummary",
    "make_chakra_converter",
]
