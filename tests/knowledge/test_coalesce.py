"""Micro-batching of concurrent requests (knowledge.coalesce.Coalescer)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from knowledge.coalesce import Coalescer


async def test_requests_that_wait_go_together_and_each_gets_its_own_result() -> None:
    release = threading.Event()
    calls: list[list[int]] = []

    def square(batch: list[int]) -> list[int]:
        calls.append(batch)
        release.wait(5)  # the first call blocks until every request is queued
        return [n * n for n in batch]

    coalescer: Coalescer[int, int] = Coalescer(square, max_batch=4)
    tasks = [asyncio.create_task(coalescer.submit(0))]
    await asyncio.sleep(0.05)  # the call for 0 is running: the others queue behind it
    tasks += [asyncio.create_task(coalescer.submit(n)) for n in range(1, 9)]
    await asyncio.sleep(0.05)
    release.set()

    assert await asyncio.gather(*tasks) == [n * n for n in range(9)]
    assert calls == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]  # one alone, then batches of max_batch


async def test_a_failed_call_fails_its_requests_and_the_next_batch_still_runs() -> None:
    def run(batch: list[str]) -> list[str]:
        if "bad" in batch:
            raise RuntimeError("engine down")
        return [s.upper() for s in batch]

    coalescer: Coalescer[str, str] = Coalescer(run, max_batch=2)
    results = await asyncio.gather(
        coalescer.submit("bad"),
        coalescer.submit("ok"),
        coalescer.submit("fine"),
        return_exceptions=True,
    )
    assert isinstance(results[0], RuntimeError)
    assert isinstance(results[1], RuntimeError)  # same batch as "bad"
    assert results[2] == "FINE"
    assert await coalescer.submit("again") == "AGAIN"


def test_it_serves_a_new_event_loop_after_the_first_one_closed() -> None:
    coalescer: Coalescer[int, int] = Coalescer(lambda b: [n + 1 for n in b], max_batch=8)
    assert asyncio.run(coalescer.submit(1)) == 2
    assert asyncio.run(coalescer.submit(2)) == 3


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Coalescer(lambda b: b, max_batch=0)
