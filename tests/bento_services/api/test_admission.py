"""Admission control on its own: the concurrency limit, the bounded queue, its wait limit, and the counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from bento_services.api.admission import Admission, OverloadedError
from bento_services.metrics import ADMISSIONS

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


def count(kind: str, result: str) -> float:
    return ADMISSIONS.labels(kind, result)._value.get()


def test_up_to_the_limit_run_at_once_and_the_next_waits_its_turn_in_order() -> None:
    async def scenario() -> None:
        gate = Admission("unit-order", limit=2, queue=5, max_wait_s=30.0)
        assert [await gate.acquire(), await gate.acquire()] == [0.0, 0.0]
        order: list[int] = []

        async def queued(k: int) -> None:
            await gate.acquire()
            order.append(k)

        waiting = [asyncio.ensure_future(queued(k)) for k in range(3)]
        await asyncio.sleep(0.05)
        assert (gate.active, gate.waiting, order) == (2, 3, [])
        gate.release()
        await asyncio.sleep(0.05)
        assert order == [0] and gate.waiting == 2
        gate.release()
        gate.release()
        await asyncio.gather(*waiting)
        assert order == [0, 1, 2] and gate.active == 2  # each freed slot changed hands
        gate.release()
        gate.release()
        assert (gate.active, gate.waiting) == (0, 0)

    before = count("unit-order", "admitted")
    run(scenario())
    assert count("unit-order", "admitted") == before + 5


def test_a_full_queue_refuses_at_once_with_retry_after_and_a_message() -> None:
    async def scenario() -> OverloadedError:
        gate = Admission("unit-full", limit=1, queue=1, max_wait_s=30.0)
        await gate.acquire()
        waiter = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0.05)
        with pytest.raises(OverloadedError) as refused:
            await gate.acquire()  # no wait: a full queue answers at once
        gate.release()
        await waiter
        gate.release()
        return refused.value

    before = count("unit-full", "queue_full")
    refused = run(scenario())
    assert refused.http_status == 503 and refused.retry_after_seconds >= 1
    assert "overloaded" in refused.message and "retry in" in refused.message
    assert count("unit-full", "queue_full") == before + 1


def test_a_wait_past_its_limit_is_refused_and_leaves_the_queue() -> None:
    async def scenario() -> None:
        gate = Admission("unit-wait", limit=1, queue=4, max_wait_s=0.05)
        await gate.acquire()
        with pytest.raises(OverloadedError, match="no slot freed within 50 ms"):
            await gate.acquire()
        assert (gate.active, gate.waiting) == (1, 0)
        gate.release()
        assert await gate.acquire() == 0.0  # the refused request took nothing with it

    before = count("unit-wait", "queue_timeout")
    run(scenario())
    assert count("unit-wait", "queue_timeout") == before + 1


def test_an_abandoned_request_never_keeps_a_slot() -> None:
    async def scenario() -> None:
        gate = Admission("unit-cancel", limit=1, queue=4, max_wait_s=30.0)
        await gate.acquire()
        gone = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0.05)
        gone.cancel()  # the client went away while waiting
        await asyncio.gather(gone, return_exceptions=True)
        assert gate.waiting == 0
        handed = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0.05)
        gate.release()  # hands the slot to `handed` ...
        handed.cancel()  # ... which is abandoned before it resumes: the slot is passed on, not lost
        await asyncio.gather(handed, return_exceptions=True)
        assert (gate.active, gate.waiting) == (0, 0)

    run(scenario())


def test_after_a_burst_requests_are_admitted_again_at_once() -> None:
    async def scenario() -> tuple[int, int, float]:
        gate = Admission("unit-burst", limit=2, queue=3, max_wait_s=5.0)
        release = asyncio.Event()

        async def request() -> bool:
            try:
                async with gate.slot():
                    await release.wait()
                return True
            except OverloadedError:
                return False

        burst = [asyncio.ensure_future(request()) for _ in range(10)]
        await asyncio.sleep(0.05)
        release.set()
        served = sum(await asyncio.gather(*burst))
        async with gate.slot() as waited:
            return served, gate.active, waited

    served, active, waited = run(scenario())
    assert served == 5  # 2 running + 3 queued; the other 5 refused
    assert (active, waited) == (1, 0.0)


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="limit >= 1"):
        Admission("unit-bad", limit=0, queue=1, max_wait_s=1.0)


def test_an_arrival_whose_turn_would_come_past_the_wait_limit_is_refused_on_arrival() -> None:
    async def scenario() -> None:
        gate = Admission("unit-predict", limit=1, queue=500, max_wait_s=0.5)
        await gate.acquire()
        waiters = [asyncio.ensure_future(gate.acquire()) for _ in range(4)]
        await asyncio.sleep(0.01)
        for _ in range(4):  # the slot changes hands every ~20 ms while requests wait: the pace is measured
            await asyncio.sleep(0.02)
            gate.release()
        await asyncio.gather(*waiters)
        assert gate.expected_wait_s is not None and gate.expected_wait_s > 0
        crowd = []
        while (expected := gate.expected_wait_s) is not None and expected <= gate.max_wait_s:
            crowd.append(asyncio.ensure_future(gate.acquire()))  # each queues: its turn comes within the limit
            await asyncio.sleep(0)
        assert gate.waiting == len(crowd)
        started = time.perf_counter()
        with pytest.raises(OverloadedError, match="slot freed every"):
            await gate.acquire()
        assert time.perf_counter() - started < 0.05  # refused on arrival, not after waiting the 500 ms out
        for task in crowd:
            task.cancel()
        await asyncio.gather(*crowd, return_exceptions=True)

    before = count("unit-predict", "queue_timeout")
    run(scenario())
    assert count("unit-predict", "queue_timeout") == before + 1


def test_a_drained_queue_forgets_its_pace() -> None:
    async def scenario() -> None:
        gate = Admission("unit-drain", limit=1, queue=50, max_wait_s=0.5)
        await gate.acquire()
        waiters = [asyncio.ensure_future(gate.acquire()) for _ in range(2)]
        await asyncio.sleep(0.01)
        for _ in range(2):
            await asyncio.sleep(0.02)
            gate.release()
        await asyncio.gather(*waiters)
        assert gate.expected_wait_s is not None
        gate.release()  # nobody waits and the slot is free: the queue drained
        assert gate.expected_wait_s is None and (gate.active, gate.waiting) == (0, 0)

    run(scenario())
