"""Zefort: contract bulk operations and the tasks that carry them out.

`ZefortClient` is the way in; `ZefortTask` is what a bulk operation runs as; `ZefortTaskListing`
reads the pending tasks; `ZefortTaskSource` lets the job tracker follow tasks.
"""

from asyncbulk.zefort._client import ZefortClient, ZefortTaskListing, ZefortTaskSource
from asyncbulk.zefort._models import ZefortTask, make_zefort_converter

__all__ = [
    "ZefortClient",
    "ZefortTask",
    "ZefortTaskListing",
    "ZefortTaskSource",
    "make_zefort_converter",
]
