"""Follow any number of jobs to completion at once, detecting each soon after, with few requests.

A pure `Scheduler` decides (which job to poll, when to sweep a listing, when to look again) from
the time it is given; the anyio engine (`JobTracker`) carries that out and hands each finished
job to the consumer exactly once. `TrackingOptions` holds the settings both vendors' clients
share.
"""

from asyncbulk._tracking._engine import JobTracker
from asyncbulk._tracking._iterate import TrackIterator, track, wait_for
from asyncbulk._tracking._options import TrackingOptions
from asyncbulk._tracking._scheduler import UNTRACKED, Scheduler
from asyncbulk._tracking._source import JobSource, SweepView
from asyncbulk._tracking._stats import TrackerStats

__all__ = [
    "UNTRACKED",
    "JobSource",
    "JobTracker",
    "Scheduler",
    "SweepView",
    "TrackIterator",
    "TrackerStats",
    "TrackingOptions",
    "track",
    "wait_for",
]
