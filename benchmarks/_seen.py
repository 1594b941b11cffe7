"""When a client saw each task: what the tracking contenders note, compactly.

In a module of its own so that the client process (`python -m benchmarks._client`, whose
module is `__main__` there) and the scenario modules share one class.
"""

from __future__ import annotations

import array
import time


class Seen:
    """When the client saw each task: one float per task, in an array made before measuring.

    Contenders and the empty process hold the same `Seen`, so what it costs cancels out of
    "memory above the empty process"; a dict of a million ids would not.
    """

    def __init__(self, ids: list[str]) -> None:
        """Room for every id, none seen."""
        self.ids = ids
        self._index = {task_id: i for i, task_id in enumerate(ids)}
        self._at = array.array("d", bytes(8 * len(ids)))
        self.count = 0

    def mark(self, task_id: str) -> None:
        """Note that the client saw `task_id` finished now (the first time only)."""
        index = self._index[task_id]
        if not self._at[index]:
            self._at[index] = time.time()
            self.count += 1

    def __len__(self) -> int:
        """How many were seen."""
        return self.count

    def as_dict(self) -> dict[str, float]:
        """Id to when it was seen, for the ones seen."""
        return {task_id: at for task_id, at in zip(self.ids, self._at, strict=True) if at}
