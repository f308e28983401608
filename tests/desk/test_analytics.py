"""Analytics figures: percentiles, episodes per escalation, SLA breaches from the SLA table."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bot.auth import add_agent
from bot.desk import analytics
from bot.envelope import utcnow
from bot.store.tables import sla_timers
from tests.console.desk import open_desk


def test_nearest_rank_percentiles() -> None:
    values = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    assert analytics.percentile(values, 0.5) == 50.0
    assert analytics.percentile(values, 0.9) == 90.0
    assert analytics.percentile([7.0], 0.9) == 7.0
    assert analytics.percentile([], 0.5) is None


async def test_each_escalation_is_an_episode_and_sla_breaches_are_read(tmp_path: Path) -> None:
    async with open_desk(tmp_path) as desk:
        alice = await add_agent(desk.store, "alice", "correct horse battery", "Alice")
        key = await desk.customer_says("refund please")
        for reason in ("customer_request", "no_answer"):  # escalated twice, answered twice
            await desk.handoff.escalate(key, reason)
            await desk.handoff.claim(key, alice)
            await desk.handoff.reply(key, alice, "On it.")
            await desk.handoff.reply(key, alice, "Done.")
            await desk.handoff.resolve(key, alice)
        # Breaches recorded on the stored SLA clocks: one today, one 40 days ago.
        now = utcnow()
        engine = await desk.handoff.desk.open()
        async with engine.begin() as conn:
            await conn.execute(
                sla_timers.insert(),
                {
                    "session_key": str(key),
                    "policy": "test",
                    "started_at": now - timedelta(days=41),
                    "first_response_due": now - timedelta(days=41),
                    "resolution_due": now - timedelta(days=40),
                    "first_response_breached_at": now,
                    "resolution_breached_at": now - timedelta(days=40),
                },
            )
        figures = await analytics.compute(desk.handoff.desk, now.date(), now.date())
    totals = figures["totals"]
    assert totals["escalations"] == 2
    assert totals["escalation_reasons"] == {"customer_request": 1, "no_answer": 1}
    assert totals["bot_resolved"] == 0
    assert totals["sla_breaches"] == 1  # the one 40 days ago is outside the range
    # one first response and one resolution per episode: the second reply is not "first"
    assert (totals["first_responses"], totals["resolutions"]) == (2, 2)
    first, resolution = totals["first_response_p90_s"], totals["resolution_p90_s"]
    assert first is not None
    assert resolution is not None
    assert 0 <= first <= resolution
    csv_rows = analytics.to_csv(figures).splitlines()
    assert csv_rows[0].startswith("day,conversations,bot_resolved,bot_resolution_rate")
    assert csv_rows[-1].startswith("total,1,0,0.0,2,")
