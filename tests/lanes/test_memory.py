"""Memory-backend specifics the contract suite cannot see: configuration checks, that idle
lanes leave nothing behind, and the race between a turn's end and its done callback."""

from __future__ import annotations

import asyncio
import gc

import pytest

from bot.config import QueueMode
from bot.lanes.base import LaneConfig
from bot.lanes.memory import MemoryLaneQueue, _Lane
from tests.lanes.harness import Recorder, eventually, ids, key, msg


@pytest.mark.parametrize(
    "config",
    [
        LaneConfig(max_concurrent_turns=0),
        LaneConfig(lane_cap=0),
        LaneConfig(debounce_ms=-1),
        LaneConfig(lane_idle_s=-1.0),
    ],
)
def test_invalid_config_is_refused(config: LaneConfig) -> None:
    with pytest.raises(ValueError, match="must"):
        MemoryLaneQueue(config)


def _live_lanes() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, _Lane))


async def test_reclaimed_lanes_leave_no_objects_timers_or_tasks() -> None:
    rec = Recorder()
    queue = MemoryLaneQueue(LaneConfig(lane_idle_s=0.05, debounce_ms=5))
    await queue.start(rec.handle, rec.on_overflow)
    tasks_before = len(asyncio.all_tasks())
    for i in range(1000):
        await queue.enqueue(msg(f"s{i}", 1), QueueMode.COLLECT)
        await queue.enqueue(msg(f"s{i}", 2), QueueMode.COLLECT)  # exercises the debounce timer
    assert _live_lanes() == 1000
    await rec.wait_for(lambda: sum(len(t.messages) for t in rec.finished) == 2000)

    await eventually(lambda: queue.stats().lanes == 0)

    # A timer or task still referring to a lane would keep it alive.
    assert _live_lanes() == 0
    assert len(asyncio.all_tasks()) == tasks_before
    await queue.close()


async def test_interrupt_right_after_a_turn_ended_does_not_rerun_it() -> None:
    rec = Recorder()
    queue = MemoryLaneQueue(LaneConfig(debounce_ms=10_000))
    await queue.start(rec.handle, rec.on_overflow)
    await queue.enqueue(msg("a", 1), QueueMode.COLLECT)
    await asyncio.sleep(0)  # the turn runs to its end; its done callback is still pending
    task = queue._lanes[key("a")].task
    assert task is not None
    assert task.done()

    await queue.enqueue(msg("a", 2), QueueMode.INTERRUPT)

    await rec.wait_for(lambda: len(rec.finished) == 2)
    assert [ids(t.messages) for t in rec.finished] == [["a-1"], ["a-2"]]
    assert not rec.finished[1].interrupted
    assert rec.cancelled == []
    await queue.close()


async def test_close_cancels_running_turns_and_forgets_lanes() -> None:
    rec = Recorder(hold_all=True)
    queue = MemoryLaneQueue(LaneConfig(lane_cap=1))
    await queue.start(rec.handle, rec.on_overflow)
    await queue.enqueue(msg("a", 1), QueueMode.COLLECT)
    await rec.until_started(1)
    for n in (2, 3, 4):
        await queue.enqueue(msg("a", n), QueueMode.COLLECT)

    await queue.close()

    assert ids([t.messages[0] for t in rec.cancelled]) == ["a-1"]
    assert queue.stats().lanes == 0
    assert queue.stats().active_turns == 0
