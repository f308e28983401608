"""The lane contract of data-subject requests: ``queued`` and ``purge`` on every backend.

Alice is the subject: her direct lane is hers, in the group lane only her messages are, and
Bob's message there quoting her address names her. Bob's lanes must run as if nothing happened.
"""

from __future__ import annotations

import asyncio

from bot.config import QueueMode
from bot.envelope import InboundMessage, Participant
from bot.lanes.base import LaneConfig, LaneFactory, LanePurge, LaneSelection
from tests.lanes.harness import ACCOUNT, CHANNEL, Recorder, ids, key

COLLECT = QueueMode.COLLECT
FOLLOWUP = QueueMode.FOLLOWUP
INTERRUPT = QueueMode.INTERRUPT
ADDRESS = "alice@example.org"


def said(session: str, who: str, n: int, text: str | None = None) -> InboundMessage:
    """Message ``{who}-{n}`` of ``who`` in the lane of test session ``session``."""
    return InboundMessage(
        event_id=f"{who}-{n}",
        channel=CHANNEL,
        account=ACCOUNT,
        session_key=key(session),
        sender=Participant(id=who, name=who.title(), email=f"{who}@example.org"),
        text=text if text is not None else f"{who} says {n}",
    )


def scrub(msg: InboundMessage) -> InboundMessage:
    return msg.model_copy(update={"text": msg.text.replace(ADDRESS, "[erased]")})


ALICE = LaneSelection(
    sessions=frozenset({key("alice")}), owns=lambda m: m.sender.id == "alice", scrub=scrub
)


async def test_purge_takes_her_waiting_messages_and_the_others_run_untouched(
    lane_factory: LaneFactory,
) -> None:
    queue = lane_factory(LaneConfig(debounce_ms=0))
    for m in (
        said("alice", "alice", 1, f"I am {ADDRESS}, card 4242"),
        said("alice", "alice", 2),
        said("bob", "bob", 1),
        said("grp", "bob", 1, "anyone?"),
        said("grp", "alice", 2, "me too"),
        said("grp", "bob", 3, f"ask {ADDRESS}"),
    ):
        await queue.enqueue(m, COLLECT)

    found = await queue.queued(ALICE)
    assert sorted((e.message.event_id, e.match, e.in_turn) for e in found) == [
        ("alice-1", "theirs", False),
        ("alice-2", "theirs", False),
        ("alice-2", "theirs", False),
        ("bob-3", "mentions", False),
    ]
    assert {e.message.session_key for e in found if e.message.event_id == "bob-3"} == {key("grp")}

    purged = await queue.purge(ALICE)
    assert purged == LanePurge(removed=3, scrubbed=1, lanes_dropped=1, in_flight=0)
    assert await queue.queued(ALICE) == []
    assert (await queue.purge(ALICE)).removed == 0  # nothing left: a second purge is a no-op

    rec = Recorder()
    await queue.start(rec.handle, rec.on_overflow)
    await rec.until_finished(2)
    await asyncio.sleep(0.2)
    assert len(rec.started) == 2  # no turn for her lane
    assert ids(rec.turns_of("bob")[0].messages) == ["bob-1"]
    (group,) = rec.turns_of("grp")
    assert ids(group.messages) == ["bob-1", "bob-3"]
    assert [m.text for m in group.messages] == ["anyone?", "ask [erased]"]

    await queue.enqueue(said("alice", "alice", 3, "hello again"), COLLECT)
    await rec.until_finished(3)  # her lane works again as a new one
    assert ids(rec.turns_of("alice")[0].messages) == ["alice-3"]


async def test_a_running_turn_is_left_alone_and_reported_in_flight(
    lane_factory: LaneFactory,
) -> None:
    rec = Recorder(hold={key("alice")})
    queue = lane_factory(LaneConfig(debounce_ms=0))
    await queue.start(rec.handle, rec.on_overflow)
    await queue.enqueue(said("alice", "alice", 1), FOLLOWUP)
    await rec.until_started(1)
    await queue.enqueue(said("alice", "alice", 2), FOLLOWUP)

    assert sorted((e.message.event_id, e.in_turn) for e in await queue.queued(ALICE)) == [
        ("alice-1", True),
        ("alice-2", False),
    ]
    purged = await queue.purge(ALICE)
    assert (purged.removed, purged.in_flight) == (1, 1)

    rec.release("alice")
    await rec.until_finished(1)
    for _ in range(100):  # the turn's ack lands, then nothing of hers is in flight
        if (await queue.purge(ALICE)).in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert await queue.queued(ALICE) == []
    await asyncio.sleep(0.2)
    assert [ids(t.messages) for t in rec.started] == [["alice-1"]]  # alice-2 never ran


async def test_purge_keeps_folded_overflow_consistent(lane_factory: LaneFactory) -> None:
    rec = Recorder(hold={key("grp")})
    queue = lane_factory(LaneConfig(debounce_ms=0, lane_cap=2))
    await queue.start(rec.handle, rec.on_overflow)
    await queue.enqueue(said("grp", "bob", 1), COLLECT)
    await rec.until_started(1)
    for who, n in (("alice", 2), ("bob", 3), ("alice", 4), ("bob", 5)):
        await queue.enqueue(said("grp", who, n), COLLECT)  # alice-2 and bob-3 are folded

    assert (await queue.purge(ALICE)).removed == 2
    rec.hold.clear()
    rec.release("grp")
    await rec.until_finished(2)
    second = rec.finished[1]
    assert (ids(second.overflow), ids(second.messages)) == (["bob-3"], ["bob-5"])


async def test_purge_never_leaves_folded_messages_without_a_head(
    lane_factory: LaneFactory,
) -> None:
    rec = Recorder(hold={key("grp")})
    queue = lane_factory(LaneConfig(debounce_ms=0, lane_cap=1))
    await queue.start(rec.handle, rec.on_overflow)
    await queue.enqueue(said("grp", "bob", 1), COLLECT)
    await rec.until_started(1)
    await queue.enqueue(said("grp", "bob", 2), COLLECT)
    await queue.enqueue(said("grp", "alice", 3), COLLECT)  # bob-2 folded, alice-3 the head

    assert (await queue.purge(ALICE)).removed == 1
    rec.hold.clear()
    rec.release("grp")
    await rec.until_finished(2)
    second = rec.finished[1]
    assert ids(second.all_messages) == ["bob-2"]


async def test_purge_of_a_carried_interrupted_turn(lane_factory: LaneFactory) -> None:
    """Her message in a turn an interrupt cancelled (carried, waiting for a slot) goes; the
    carried turn of Bob's message stays whole."""
    rec = Recorder(hold={key("grp"), key("blocker")})
    queue = lane_factory(LaneConfig(debounce_ms=0, max_concurrent_turns=1))
    await queue.start(rec.handle, rec.on_overflow)
    await queue.enqueue(said("grp", "alice", 1), COLLECT)
    await rec.until_started(1)
    await queue.enqueue(said("blocker", "carol", 1), COLLECT)  # waits for the one slot
    await queue.enqueue(said("grp", "bob", 2), INTERRUPT)  # cancels alice-1's turn: carried
    await rec.wait_for(lambda: len(rec.cancelled) == 1 and len(rec.started) == 2)
    assert rec.started[1].session_key == key("blocker")

    found = await queue.queued(ALICE)
    assert [(e.message.event_id, e.in_turn) for e in found] == [("alice-1", False)]
    purged = await queue.purge(ALICE)
    assert (purged.removed, purged.in_flight, purged.lanes_dropped) == (1, 0, 0)

    rec.hold.clear()
    rec.release("blocker")
    await rec.wait_for(lambda: len(rec.finished) == 2)
    turn = rec.turns_of("grp")[0]
    assert ids(turn.all_messages) == ["bob-2"]
