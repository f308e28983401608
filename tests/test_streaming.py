"""AnswerStream: coalescing, throttling, one edit in flight, ordering against the final send."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.channel import StreamingChannel
from bot.envelope import OutboundMessage, SessionKey
from bot.errors import ChannelUnavailable, RateLimited
from bot.streaming import MIN_DELTA_CHARS, AnswerStream

KEY = SessionKey("slack:T1:dm:U1")
TEMPLATE = OutboundMessage(session_key=KEY, text="", reply_to="Ev1", idempotency_key="answer:Ev1")


class RecordingChannel:
    """A StreamingChannel that records edits (start time, text); each takes ``latency_s``."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.edits: list[tuple[float, str]] = []
        self.discarded: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.errors: list[Exception] = []

    async def stream(self, out: OutboundMessage) -> None:
        started = time.monotonic()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency_s)
            if self.errors:
                raise self.errors.pop(0)
            self.edits.append((started, out.text))
        finally:
            self.in_flight -= 1

    async def discard_stream(self, out: OutboundMessage) -> None:
        self.discarded.append(out.idempotency_key)


async def feed(stream: AnswerStream, text: str, *, step: int = 5, pause_s: float = 0.002) -> int:
    """Push ``text`` cumulatively, ``step`` characters at a time; returns the push count."""
    pushes = 0
    for end in range(step, len(text) + step, step):
        await stream.push(text[:end])
        pushes += 1
        await asyncio.sleep(pause_s)
    return pushes


LONG = "Switchboard answers support questions from the knowledge base. " * 8


def test_recording_channel_has_the_capability() -> None:
    assert isinstance(RecordingChannel(), StreamingChannel)


async def test_a_long_stream_is_coalesced_into_few_spaced_edits() -> None:
    channel = RecordingChannel()
    stream = AnswerStream(channel, TEMPLATE, interval_s=0.05)
    t0 = time.monotonic()
    pushes = await feed(stream, LONG)
    elapsed = time.monotonic() - t0
    await stream.close()

    assert pushes > 80
    assert 2 <= len(channel.edits) <= elapsed / 0.05 + 2
    assert len(channel.edits) < pushes / 3
    gaps = [b[0] - a[0] for a, b in zip(channel.edits, channel.edits[1:], strict=False)]
    assert min(gaps) >= 0.049
    texts = [t for _, t in channel.edits]
    assert all(LONG.startswith(t) for t in texts)
    assert texts == sorted(texts, key=len)  # newest text only, never an older one after it
    assert stream.edits == len(channel.edits)


async def test_never_more_than_one_edit_in_flight() -> None:
    channel = RecordingChannel(latency_s=0.03)
    stream = AnswerStream(channel, TEMPLATE, interval_s=0.0)
    await feed(stream, LONG[:300], step=3, pause_s=0.001)
    await stream.close()

    assert channel.max_in_flight == 1
    assert len(channel.edits) < 100 / 3


async def test_close_waits_for_the_edit_in_flight_and_later_pushes_do_nothing() -> None:
    channel = RecordingChannel(latency_s=0.1)
    stream = AnswerStream(channel, TEMPLATE, interval_s=0.0)
    await stream.push("The first part of the answer")
    await asyncio.sleep(0.01)  # the edit is in flight now
    await stream.close()
    closed_at = time.monotonic()

    assert [t for _, t in channel.edits] == ["The first part of the answer"]
    assert channel.edits[0][0] <= closed_at  # finished before close returned
    await stream.push("The first part of the answer, and a late second part")
    await asyncio.sleep(0.05)
    assert len(channel.edits) == 1


async def test_close_does_not_wait_out_the_throttle() -> None:
    channel = RecordingChannel()
    stream = AnswerStream(channel, TEMPLATE, interval_s=30.0)
    await stream.push("first text shown at once")
    await asyncio.sleep(0.01)
    await stream.push("first text shown at once, then a pending second text")
    t0 = time.monotonic()
    await stream.close()

    assert time.monotonic() - t0 < 0.5
    assert [t for _, t in channel.edits] == ["first text shown at once"]


async def test_tiny_appends_wait_for_more_text() -> None:
    channel = RecordingChannel()
    stream = AnswerStream(channel, TEMPLATE, interval_s=0.0)
    base = "An answer being written"
    await stream.push(base)
    await asyncio.sleep(0.01)
    await stream.push(base + "x" * (MIN_DELTA_CHARS - 1))
    await asyncio.sleep(0.01)
    assert len(channel.edits) == 1
    await stream.push(base + "x" * MIN_DELTA_CHARS)
    await asyncio.sleep(0.01)
    await stream.close()
    assert [t for _, t in channel.edits] == [base, base + "x" * MIN_DELTA_CHARS]


async def test_a_429_pauses_edits_for_retry_after_and_the_text_still_shows() -> None:
    channel = RecordingChannel()
    channel.errors.append(RateLimited("slow down", retry_after=0.2))
    stream = AnswerStream(channel, TEMPLATE, interval_s=0.0)
    t0 = time.monotonic()
    await stream.push("A partial answer that was rate limited")
    await asyncio.sleep(0.3)
    await stream.close()

    assert stream.failures == 1
    [(at, text)] = channel.edits
    assert at - t0 >= 0.19
    assert text == "A partial answer that was rate limited"


async def test_failing_edits_never_raise() -> None:
    channel = RecordingChannel()
    channel.errors += [ChannelUnavailable("down"), RuntimeError("bug in a plugin")]
    stream = AnswerStream(channel, TEMPLATE, interval_s=0.0)
    await stream.push("one partial answer")
    await asyncio.sleep(0.01)
    await stream.push("one partial answer, then a longer one")
    await asyncio.sleep(0.01)
    await stream.push("one partial answer, then a longer one, and it finally works")
    await asyncio.sleep(0.01)
    await stream.close()

    assert stream.failures == 2
    assert [t for _, t in channel.edits] == [
        "one partial answer, then a longer one, and it finally works"
    ]


async def test_discard_removes_only_a_message_that_was_tried() -> None:
    quiet = RecordingChannel()
    await AnswerStream(quiet, TEMPLATE, interval_s=0.0).discard()
    assert quiet.discarded == []

    channel = RecordingChannel()
    stream = AnswerStream(channel, TEMPLATE, interval_s=0.0)
    await stream.push("Let me look that up")
    await stream.discard()  # closed before the first edit started: nothing to remove
    assert channel.discarded == []

    stream = AnswerStream(channel, TEMPLATE, interval_s=0.0)
    await stream.push("Let me look that up")
    await asyncio.sleep(0.01)
    await stream.discard()
    assert channel.discarded == ["answer:Ev1"]


def test_a_template_without_idempotency_key_is_refused() -> None:
    with pytest.raises(ValueError, match="idempotency_key"):
        AnswerStream(
            RecordingChannel(),
            TEMPLATE.model_copy(update={"idempotency_key": None}),
            interval_s=1.0,
        )
