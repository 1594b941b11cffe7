"""A simulator of the ChakraHQ and Zefort bulk APIs, for tests, benchmarks and demos.

`Simulator` serves both vendors over HTTP on loopback, with the documentation's example data,
jobs and tasks that progress on a (scalable or hand-driven) clock, seeded fault injection, and
records of everything the servers saw. It imports nothing else from asyncbulk, so it also tests
clients written without it.

A pytest test (with the anyio plugin) reads::

    import base64

    import aiohttp
    import pytest

    from asyncbulk.testing import Fault, Simulator


    @pytest.mark.anyio
    async def test_bulk_update_survives_a_lost_answer():
        async with (
            Simulator(faults=[Fault("drop_after", vendor="zefort", times=1)]) as sim,
            aiohttp.ClientSession() as http,
        ):
            body = {"status": "done", "search": {"q_tags": "contracts of service"}}
            key = base64.b64encode(f"{sim.zefort_api_key}:".encode()).decode()
            url = f"{sim.zefort_url}/api/contracts/bulk_update/"
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await http.post(url, json=body, headers={"Authorization": f"Basic {key}"})
            # The task exists although its answer was lost: a blind retry makes a second one.
            assert len(sim.records.zefort_submissions) == 1

Run `python -m asyncbulk.testing --port 8080` to serve both vendors from a terminal.
"""

from ._chakra import (
    ChakraJob,
    ChakraProcedure,
    ChakraProcess,
    ChakraState,
    chakra_error,
    make_chakra_app,
)
from ._clock import Clock, ManualClock, MonotonicClock
from ._faults import Fault, FaultKind, FaultPlan, FaultSet
from ._limits import RetryAfterForm, TokenBucket
from ._records import (
    ChakraSubmission,
    FinishTime,
    Records,
    RequestRecord,
    ZefortSubmission,
)
from ._simulator import Simulator
from ._zefort import (
    TaskDelay,
    ZefortContract,
    ZefortState,
    ZefortTask,
    make_zefort_app,
    zefort_error,
)

__all__ = [
    "ChakraJob",
    "ChakraProcedure",
    "ChakraProcess",
    "ChakraState",
    "ChakraSubmission",
    "Clock",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "FaultSet",
    "FinishTime",
    "ManualClock",
    "MonotonicClock",
    "Records",
    "RequestRecord",
    "RetryAfterForm",
    "Simulator",
    "TaskDelay",
    "TokenBucket",
    "ZefortContract",
    "ZefortState",
    "ZefortSubmission",
    "ZefortTask",
    "chakra_error",
    "make_chakra_app",
    "make_zefort_app",
    "zefort_error",
]
