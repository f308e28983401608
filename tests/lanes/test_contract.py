"""The lane contract: semantics every ``LaneQueue`` backend keeps (see ``bot/lanes/base.py``).

These tests receive a backend through ``lane_factory`` and never name it. They wait on the
recording handler's events; the only timed waits are bounded quiet windows of ``collect``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest

from bot.config import QueueMode
from bot.envelope import InboundMessage
from bot.errors import Draining
from bot.lanes.base import LaneConfig, LaneFactory, LaneQueue
from tests.lanes.harness import Recorder, eventually, ids, key, msg

COLLECT = QueueMode.COLLECT
FOLLOWUP = QueueMode.FOLLOWUP
INTERRUPT = QueueMode.INTERRUPT


async def started(factory: LaneFactory, rec: Recorder, **config: Any) -> LaneQueue:
    """A started queue of the backend under test with ``config`` overrides."""
    queue = factory(LaneConfig(**config))
    await queue.start(rec.handle, rec.on_overflow)
    return queue


# --- basics -----------------------------------------------------------------------------------


async def test_first_message_of_idle_lane_starts_at_once(lane_factory: LaneFactory) -> None:
    rec = Recorder()
    queue = await started(lane_factory, rec, debounce_ms=10_000)

    waiting = await queue.enqueue(msg("a", 1), COLLECT)

    # No debounce before the first turn: a 10 s window would trip the 2 s wait.
    await rec.wait_for(lambda: len(rec.finished) == 1, within_s=2)
    assert waiting == 0
    turn = rec.finished[0]
    assert turn.session_key == key("a")
    assert ids(turn.messages) == ["a-1"]
    assert turn.overflow == []
    assert turn.mode is COLLECT
    assert not turn.interrupted


async def test_message_to_lane_idle_after_a_turn_starts_at_once(
    lane_factory: LaneFactory,
) -> None:
    rec = Recorder()
    queue = await started(lane_factory, rec, debounce_ms=10_000, lane_idle_s=60)
    await queue.enqueue(msg("a", 1), COLLECT)
    await rec.wait_for(lambda: len(rec.finished) == 1, within_s=2)

    await queue.enqueue(msg("a", 2), COLLECT)

    await rec.wait_for(lambda: len(rec.finished) == 2, within_s=2)
    assert [ids(t.messages) for t in rec.finished] == [["a-1"], ["a-2"]]


async def test_start_twice_raises(lane_factory: LaneFactory) -> None:
    rec = Recorder()
    queue = await started(lane_factory, rec)
    with pytest.raises(RuntimeError):
        await queue.start(rec.handle, rec.on_overflow)


async def test_messages_enqueued_before_start_wait_for_it(lane_factory: LaneFactory) -> None:
    rec = Recorder()
    queue = lane_factory(LaneConfig(debounce_ms=10_000))
    await queue.enqueue(msg("a", 1), FOLLOWUP)
    await queue.enqueue(msg("b", 1), FOLLOWUP)
    assert queue.stats().queued == 2
    assert rec.started == []

    await queue.start(rec.handle, rec.on_overflow)

    await rec.wait_for(lambda: len(rec.finished) == 2, within_s=2)
    assert sorted(ids([m for t in rec.finished for m in t.messages])) == ["a-1", "b-1"]


# --- ordering, caps, fairness -----------------------------------------------------------------


async def test_fifo_per_session_and_caps_under_random_interleaving(
    lane_factory: LaneFactory,
) -> None:
    """50 sessions x 32 messages in random modes, randomly interleaved and sent by 16
    concurrent producers, with a random handler: every message is handled exactly once, in
    order per session, one turn per session at a time, never more than the global cap at
    once; and the run reaches the cap, interrupts, batches and overflows on every backend."""
    rng = random.Random(20240601)
    rec = Recorder(rng=rng, jitter=80)
    cap = 8
    queue = await started(
        lane_factory, rec, max_concurrent_turns=cap, debounce_ms=5, lane_cap=4, lane_idle_s=60
    )
    sessions = [f"s{i}" for i in range(50)]
    per_session = 32
    plan = [s for s in sessions for _ in range(per_session)]
    rng.shuffle(plan)  # a random interleaving; each session's own messages stay in order
    sent: dict[str, list[str]] = {s: [] for s in sessions}
    modes = [COLLECT, COLLECT, FOLLOWUP, INTERRUPT]
    # A session's messages go out one after the other (asyncio locks are FIFO and each
    # producer queues on the lock as it takes the message); other sessions' go in parallel,
    # so backlogs build on a networked backend as they do in memory.
    turn_of = {s: asyncio.Lock() for s in sessions}
    todo = iter(plan)

    async def producer() -> None:
        for s in todo:
            m = msg(s, len(sent[s]))
            sent[s].append(m.event_id)
            mode = rng.choice(modes)
            async with turn_of[s]:
                await queue.enqueue(m, mode)
            for _ in range(rng.randint(0, 2)):
                await asyncio.sleep(0)

    await asyncio.gather(*(producer() for _ in range(16)))

    total = len(plan)
    await rec.wait_for(lambda: sum(len(t.all_messages) for t in rec.finished) >= total, 30.0)
    for s in sessions:
        got = [m.event_id for t in rec.turns_of(s) for m in t.all_messages]
        assert got == sent[s], s
    assert rec.max_per_session == 1
    assert rec.max_running <= cap
    # The run exercised what it claims to: the cap, interrupts, batching and overflow.
    assert rec.max_running == cap
    assert rec.cancelled
    assert any(len(t.messages) > 1 for t in rec.finished)
    assert any(t.overflow for t in rec.finished)
    await eventually(lambda: queue.stats().active_turns == 0)
    assert queue.stats().queued == 0


async def test_global_cap_and_ready_order(lane_factory: LaneFactory) -> None:
    rec = Recorder(hold_all=True)
    queue = await started(lane_factory, rec, max_concurrent_turns=3, debounce_ms=10_000)
    for i in range(10):
        await queue.enqueue(msg(f"s{i}", 1), COLLECT)

    await rec.wait_for(lambda: len(rec.started) == 3)
    for _ in range(20):
        await asyncio.sleep(0)
    stats = queue.stats()
    assert len(rec.started) == 3
    assert (stats.active_turns, stats.ready_sessions, stats.queued, stats.lanes) == (3, 7, 7, 10)

    for i in range(10):
        rec.release(f"s{i}")
        await rec.until_finished(i + 1)
        await rec.until_started(min(i + 4, 10))  # each freed slot goes to the next ready
        assert len(rec.started) == min(i + 4, 10)
    # Sessions waiting for a slot are served in the order they became ready. The first three
    # found free slots: their turns start together (in one or more claim batches, whose begins
    # may answer in any order on a cluster), so only they may start in another order.
    order = [t.session_key for t in rec.started]
    assert set(order[:3]) == {key(f"s{i}") for i in range(3)}
    assert order[3:] == [key(f"s{i}") for i in range(3, 10)]
    assert rec.max_running == 3


async def test_busy_session_goes_to_the_back_after_each_turn(lane_factory: LaneFactory) -> None:
    rec = Recorder(hold_all=True)
    queue = await started(lane_factory, rec, max_concurrent_turns=1, debounce_ms=10_000)
    await queue.enqueue(msg("a", 1), FOLLOWUP)
    await rec.wait_for(lambda: len(rec.started) == 1)
    for n in (2, 3, 4):
        await queue.enqueue(msg("a", n), FOLLOWUP)
    await queue.enqueue(msg("b", 1), FOLLOWUP)
    await queue.enqueue(msg("c", 1), FOLLOWUP)

    order: list[str] = []
    while len(order) < 7:
        await rec.wait_for(lambda: len(rec.started) == len(order) + 1)
        turn = rec.started[-1]
        order.append(turn.messages[0].event_id)
        if order[-1] == "b-1":
            await queue.enqueue(msg("d", 1), FOLLOWUP)
        rec.release(turn.messages[0].sender.id)

    # a-1 ran first; then a queued behind b and c, and after a-2 behind d.
    assert order == ["a-1", "b-1", "c-1", "a-2", "d-1", "a-3", "a-4"]
    assert rec.max_running == 1


# --- queue modes ------------------------------------------------------------------------------


async def test_collect_batches_messages_into_one_followup_turn(lane_factory: LaneFactory) -> None:
    rec = Recorder(hold={key("a")})
    queue = await started(lane_factory, rec, debounce_ms=50)
    loop = asyncio.get_running_loop()
    await queue.enqueue(msg("a", 1), COLLECT)
    await rec.wait_for(lambda: len(rec.started) == 1)

    waiting = [await queue.enqueue(msg("a", n), COLLECT) for n in (2, 3, 4)]
    assert waiting == [1, 2, 3]
    assert queue.stats().queued == 3

    rec.hold.clear()
    released_at = loop.time()
    rec.release("a")
    await rec.wait_for(lambda: len(rec.finished) == 2)

    assert [ids(t.messages) for t in rec.finished] == [["a-1"], ["a-2", "a-3", "a-4"]]
    assert rec.finished[1].mode is COLLECT
    assert rec.started_at[1] - released_at >= 0.045  # the quiet window after the turn


async def test_collect_quiet_window_restarts_on_each_message(lane_factory: LaneFactory) -> None:
    rec = Recorder(hold={key("a")})
    queue = await started(lane_factory, rec, debounce_ms=300)
    loop = asyncio.get_running_loop()
    await queue.enqueue(msg("a", 1), COLLECT)
    await rec.wait_for(lambda: len(rec.started) == 1)
    await queue.enqueue(msg("a", 2), COLLECT)
    rec.hold.clear()
    rec.release("a")
    await rec.wait_for(lambda: len(rec.finished) == 1)

    await asyncio.sleep(0.05)  # inside the 300 ms window
    late_at = loop.time()
    await queue.enqueue(msg("a", 3), COLLECT)
    await rec.wait_for(lambda: len(rec.finished) == 2)

    assert ids(rec.finished[1].messages) == ["a-2", "a-3"]
    assert rec.started_at[1] - late_at >= 0.29


async def test_followup_runs_one_turn_per_message(lane_factory: LaneFactory) -> None:
    rec = Recorder(hold={key("a")})
    queue = await started(lane_factory, rec, debounce_ms=10_000)
    await queue.enqueue(msg("a", 1), FOLLOWUP)
    await rec.wait_for(lambda: len(rec.started) == 1)
    for n in (2, 3, 4):
        await queue.enqueue(msg("a", n), FOLLOWUP)
    rec.hold.clear()
    rec.release("a")

    # No quiet window in followup mode: 10 s of debounce would trip the wait.
    await rec.wait_for(lambda: len(rec.finished) == 4, within_s=2)
    assert [ids(t.messages) for t in rec.finished] == [["a-1"], ["a-2"], ["a-3"], ["a-4"]]
    assert all(t.mode is FOLLOWUP for t in rec.finished)


async def test_followup_messages_are_never_batched(lane_factory: LaneFactory) -> None:
    rec = Recorder(hold={key("a")})
    queue = await started(lane_factory, rec, debounce_ms=20)
    await queue.enqueue(msg("a", 1), COLLECT)
    await rec.wait_for(lambda: len(rec.started) == 1)
    await queue.enqueue(msg("a", 2), FOLLOWUP)
    await queue.enqueue(msg("a", 3), COLLECT)
    await queue.enqueue(msg("a", 4), COLLECT)
    await queue.enqueue(msg("a", 5), FOLLOWUP)
    rec.hold.clear()
    rec.release("a")

    await rec.wait_for(lambda: len(rec.finished) == 4)
    assert [ids(t.messages) for t in rec.finished] == [
        ["a-1"],
        ["a-2"],
        ["a-3", "a-4"],
        ["a-5"],
    ]


async def test_interrupt_cancels_running_turn_and_carries_its_messages(
    lane_factory: LaneFactory,
) -> None:
    rec = Recorder(hold={key("a")})
    queue = await started(lane_factory, rec, debounce_ms=10_000)
    await queue.enqueue(msg("a", 1), COLLECT)
    await rec.wait_for(lambda: len(rec.started) == 1)
    await queue.enqueue(msg("a", 2), COLLECT)
    rec.hold.clear()  # the running turn stays held: only the interrupt can end it

    await queue.enqueue(msg("a", 3), INTERRUPT)

    await rec.wait_for(lambda: len(rec.finished) == 1, within_s=2)
    assert [ids(t.messages) for t in rec.cancelled] == [["a-1"]]
    turn = rec.finished[0]
    assert ids(turn.all_messages) == ["a-1", "a-2", "a-3"]
    assert turn.interrupted
    assert turn.mode is INTERRUPT
    assert rec.max_per_session == 1  # the new turn began after the cancelled one ended


async def test_interrupt_on_idle_lane_is_a_plain_turn(lane_factory: LaneFactory) -> None:
    rec = Recorder()
    queue = await started(lane_factory, rec)
    await queue.enqueue(msg("a", 1), INTERRUPT)
    await rec.wait_for(lambda: len(rec.finished) == 1)
    assert ids(rec.finished[0].messages) == ["a-1"]
    assert not rec.finished[0].interrupted
    assert rec.cancelled == []


async def test_interrupt_skips_the_quiet_window(lane_factory: LaneFactory) -> None:
    rec = Recorder(hold={key("a")})
    queue = await started(lane_factory, rec, debounce_ms=10_000)
    await queue.enqueue(msg("a", 1), COLLECT)
    await rec.wait_for(lambda: len(rec.started) == 1)
    await queue.enqueue(msg("a", 2), COLLECT)
    rec.hold.clear()
    rec.release("a")
    await rec.wait_for(lambda: len(rec.finished) == 1)  # a-2 now waits out its 10 s window

    await queue.enqueue(msg("a", 3), INTERRUPT)

    await rec.wait_for(lambda: len(rec.finished) == 2, within_s=2)
    assert ids(rec.finished[1].messages) == ["a-2", "a-3"]
    assert rec.cancelled == []


# --- overflow ---------------------------------------------------------------------------------


async def test_overflow_folds_oldest_into_next_turn_with_one_notice_per_episode(
    lane_factory: LaneFactory,
) -> None:
    rec = Recorder(hold={key("a")})
    queue = await started(lane_factory, rec, lane_cap=3, debounce_ms=20)
    await queue.enqueue(msg("a", 0), COLLECT)
    await rec.wait_for(lambda: len(rec.started) == 1)

    for n in range(1, 9):
        await queue.enqueue(msg("a", n), COLLECT)
    await rec.wait_for(lambda: len(rec.overflows) == 1)
    assert queue.stats().queued == 8  # folded, not dropped

    rec.release("a")  # a-0 done; the next turn is held too
    await rec.wait_for(lambda: len(rec.started) == 2)
    second = rec.started[1]
    assert ids(second.overflow) == ["a-1", "a-2", "a-3", "a-4", "a-5"]
    assert ids(second.messages) == ["a-6", "a-7", "a-8"]

    # A new episode while the second turn runs: a second notice.
    for n in range(9, 14):
        await queue.enqueue(msg("a", n), COLLECT)
    await rec.wait_for(lambda: len(rec.overflows) == 2)
    rec.hold.clear()
    rec.release("a")
    await rec.wait_for(lambda: len(rec.finished) == 3)

    third = rec.finished[2]
    assert ids(third.overflow) == ["a-9", "a-10"]
    assert ids(third.messages) == ["a-11", "a-12", "a-13"]
    handled = [m.event_id for t in rec.finished for m in t.all_messages]
    assert handled == [f"a-{n}" for n in range(14)]
    assert [s for s, _ in rec.overflows] == [key("a"), key("a")]
    assert 1 <= rec.overflows[0][1] <= 5
    assert 1 <= rec.overflows[1][1] <= 2
    assert len(rec.overflows) == 2


async def test_overflow_in_followup_mode_keeps_order(lane_factory: LaneFactory) -> None:
    rec = Recorder(hold={key("a")})
    queue = await started(lane_factory, rec, lane_cap=2, debounce_ms=20)
    await queue.enqueue(msg("a", 0), FOLLOWUP)
    await rec.wait_for(lambda: len(rec.started) == 1)
    waiting = [await queue.enqueue(msg("a", n), FOLLOWUP) for n in range(1, 6)]
    assert waiting == [1, 2, 3, 4, 5]
    rec.hold.clear()
    rec.release("a")

    await rec.wait_for(lambda: len(rec.finished) == 3)
    assert [(ids(t.overflow), ids(t.messages)) for t in rec.finished] == [
        ([], ["a-0"]),
        (["a-1", "a-2", "a-3"], ["a-4"]),
        ([], ["a-5"]),
    ]
    assert len(rec.overflows) == 1


# --- failures, idle lanes, drain --------------------------------------------------------------


async def test_failing_turn_is_logged_and_lane_continues(
    lane_factory: LaneFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    rec = Recorder(hold={key("a")}, fail=lambda t: t.messages[0].text == "boom")
    queue = await started(lane_factory, rec, debounce_ms=10_000)
    await queue.enqueue(msg("a", 1, "boom"), FOLLOWUP)
    await rec.wait_for(lambda: len(rec.started) == 1)
    await queue.enqueue(msg("a", 2), FOLLOWUP)
    rec.hold.clear()
    rec.release("a")

    await rec.wait_for(lambda: len(rec.finished) == 1)
    assert ids(rec.failed[0].messages) == ["a-1"]
    assert ids(rec.finished[0].messages) == ["a-2"]
    failures = [r for r in caplog.records if r.getMessage() == "lane.turn_failed"]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert getattr(failures[0], "session_key", None) == key("a")

    await queue.enqueue(msg("a", 3), FOLLOWUP)  # the lane still serves new messages
    await rec.wait_for(lambda: len(rec.finished) == 2)


async def test_idle_lanes_are_reclaimed_without_per_session_tasks(
    lane_factory: LaneFactory,
) -> None:
    rec = Recorder()
    queue = await started(
        lane_factory, rec, max_concurrent_turns=16, lane_idle_s=0.2, debounce_ms=10
    )
    sessions = 500
    baseline = len(asyncio.all_tasks())
    for i in range(sessions):
        await queue.enqueue(msg(f"s{i}", 1), COLLECT)
    await rec.wait_for(lambda: len(rec.finished) == sessions)
    await eventually(lambda: queue.stats().active_turns == 0)

    # Idle lanes cost no task each (a backend may keep a few of its own).
    assert len(asyncio.all_tasks()) - baseline < 10
    await eventually(lambda: queue.stats().lanes == 0)
    assert queue.stats() == type(queue.stats())(
        lanes=0, queued=0, active_turns=0, ready_sessions=0
    )

    await queue.enqueue(msg("s0", 2), COLLECT)  # a reclaimed session gets a new lane
    await rec.wait_for(lambda: len(rec.finished) == sessions + 1)
    assert ids(rec.finished[-1].messages) == ["s0-2"]


def _by_session(messages: list[InboundMessage]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for m in messages:
        grouped.setdefault(m.sender.id, []).append(m.event_id)
    return grouped


async def test_drain_returns_unhandled_messages_and_rejects_new_ones(
    lane_factory: LaneFactory,
) -> None:
    rec = Recorder(hold_all=True)
    queue = await started(lane_factory, rec, max_concurrent_turns=3, debounce_ms=10_000)
    for s in ("a", "b", "e"):
        await queue.enqueue(msg(s, 1), COLLECT)
    await rec.wait_for(lambda: len(rec.started) == 3)
    await queue.enqueue(msg("a", 2), COLLECT)
    await queue.enqueue(msg("c", 1), COLLECT)
    await queue.enqueue(msg("d", 1), COLLECT)
    await queue.enqueue(msg("c", 2), COLLECT)

    drain = asyncio.create_task(queue.drain(0.3))
    await asyncio.sleep(0)
    with pytest.raises(Draining):
        await queue.enqueue(msg("f", 1), COLLECT)
    rec.release("e")  # finishes within the drain window: handled

    left = await asyncio.wait_for(drain, timeout=5)

    assert _by_session(left) == {
        "a": ["a-1", "a-2"],
        "b": ["b-1"],
        "c": ["c-1", "c-2"],
        "d": ["d-1"],
    }
    assert sorted(ids([t.messages[0] for t in rec.cancelled])) == ["a-1", "b-1"]
    assert ids([m for t in rec.finished for m in t.messages]) == ["e-1"]
    assert len(rec.started) == 3  # no turn started while draining
    assert queue.stats().active_turns == 0
    with pytest.raises(Draining):
        await queue.enqueue(msg("a", 3), COLLECT)


async def test_drain_keeps_messages_waiting_out_a_quiet_window(lane_factory: LaneFactory) -> None:
    rec = Recorder(hold={key("a")})
    queue = await started(lane_factory, rec, debounce_ms=10_000)
    await queue.enqueue(msg("a", 1), COLLECT)
    await rec.wait_for(lambda: len(rec.started) == 1)
    await queue.enqueue(msg("a", 2), COLLECT)
    await queue.enqueue(msg("a", 3), COLLECT)
    rec.release("a")
    await rec.wait_for(lambda: len(rec.finished) == 1)

    left = await asyncio.wait_for(queue.drain(5.0), timeout=2)

    assert ids(left) == ["a-2", "a-3"]
    assert len(rec.started) == 1
