"""The figures of the console's analytics page, per UTC day and in total.

Read from the hub's database: ``conversations`` (new conversations per day and channel),
the ``audit`` log (``escalate`` with its reason, the agents' ``reply``, ``resolve`` and
``close``), the desk's ``csat_ratings`` and ``llm_usage``, and the SLA clocks' recorded
breaches (``sla_timers``).

Definitions (the docs' "Analytics" section says the same):

- bot resolution rate: the share of conversations started in the range that were never
  escalated to a person;
- first response: from an escalation to the first reply of a person (seconds);
- resolution: from an escalation to the agent's resolve or close (seconds);
- p50 / p90: nearest-rank percentiles; None when there is no value.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.desk.store import DeskStore
from bot.store.tables import audit, conversations, sla_timers

MAX_DAYS = 366
"""The longest range one request may ask for."""


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile ``p`` (0 < p <= 1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def day_range(first: date, last: date) -> tuple[datetime, datetime]:
    """``[first 00:00 UTC, the day after last 00:00 UTC)``."""
    return (
        datetime.combine(first, time(), tzinfo=UTC),
        datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC),
    )


@dataclass(slots=True)
class _Day:
    conversations: Counter[str] = field(default_factory=Counter)
    started: int = 0
    bot_resolved: int = 0
    escalations: Counter[str] = field(default_factory=Counter)
    first_response_s: list[float] = field(default_factory=list)
    resolution_s: list[float] = field(default_factory=list)
    sla_breaches: int = 0
    ratings: list[int] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


async def _sla_breaches(conn: AsyncConnection, since: datetime, until: datetime) -> list[datetime]:
    """Breach times in ``[since, until)``, one per recorded breach.

    First-response and resolution breaches of the stored SLA clocks (``sla_timers``,
    :mod:`bot.store.sla`).
    """
    t = sla_timers.c
    times: list[datetime] = []
    for column in (t.first_response_breached_at, t.resolution_breached_at):
        rows = await conn.execute(sa.select(column).where(column >= since, column < until))
        times.extend(r[0] for r in rows)
    return times


async def compute(desk: DeskStore, first: date, last: date) -> dict[str, Any]:
    """Every figure of the analytics page for the days ``first`` .. ``last`` (UTC, inclusive).

    Returns:
        ``{"from", "to", "days": [ISO date], "channels": [name], "per_day": [{...}],
        "totals": {...}}``; the keys of a day and of the totals are those of :data:`COLUMNS`
        plus ``conversations_by_channel`` and ``escalation_reasons``; ``csat`` totals add
        ``distribution`` and ``by_agent``.
    """
    since, until = day_range(first, last)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    per: dict[date, _Day] = {d: _Day() for d in days}
    c, a = conversations.c, audit.c
    async with desk.connect() as conn:
        started = (
            await conn.execute(
                sa.select(c.session_key, c.channel, c.created_at).where(
                    c.created_at >= since, c.created_at < until
                )
            )
        ).all()
        escalated_ever = {
            r[0]
            for r in await conn.execute(
                sa.select(a.session_key)
                .where(a.action == "escalate")
                .where(
                    a.session_key.in_(
                        sa.select(c.session_key).where(c.created_at >= since, c.created_at < until)
                    )
                )
                .distinct()
            )
        }
        events = (
            await conn.execute(
                sa.select(a.session_key, a.action, a.at, a.detail)
                .where(a.action.in_(("escalate", "reply", "resolve", "close")))
                .where(
                    a.session_key.in_(
                        sa.select(a.session_key).where(
                            a.action == "escalate", a.at >= since, a.at < until
                        )
                    )
                )
                .order_by(a.session_key, a.id)
            )
        ).all()
        breaches = await _sla_breaches(conn, since, until)
    for key, channel, created in started:
        day = per[created.astimezone(UTC).date()]
        day.conversations[channel] += 1
        day.started += 1
        day.bot_resolved += key not in escalated_ever
    _episodes(events, per, since, until)
    for at in breaches:
        if (when := at.astimezone(UTC).date()) in per:
            per[when].sla_breaches += 1
    ratings = await desk.ratings(since=since, until=until)
    for r in ratings:
        per[r.rated_at.astimezone(UTC).date()].ratings.append(r.rating)
    for u in await desk.usage(since=since, until=until):
        day = per[u.at.astimezone(UTC).date()]
        day.input_tokens += u.input_tokens
        day.output_tokens += u.output_tokens
        day.cost_usd += u.cost_usd
    channels = sorted({ch for d in per.values() for ch in d.conversations})
    total = _Day()
    for d in per.values():
        total.conversations.update(d.conversations)
        total.started += d.started
        total.bot_resolved += d.bot_resolved
        total.escalations.update(d.escalations)
        total.first_response_s += d.first_response_s
        total.resolution_s += d.resolution_s
        total.sla_breaches += d.sla_breaches
        total.ratings += d.ratings
        total.input_tokens += d.input_tokens
        total.output_tokens += d.output_tokens
        total.cost_usd += d.cost_usd
    totals = _figures(total, channels)
    by_agent: dict[str, list[int]] = defaultdict(list)
    for r in ratings:
        by_agent[r.agent or "bot"].append(r.rating)
    totals["csat_distribution"] = {str(n): total.ratings.count(n) for n in range(1, 6)}
    totals["csat_by_agent"] = {
        agent: {"count": len(v), "average": round(sum(v) / len(v), 2)}
        for agent, v in sorted(by_agent.items())
    }
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "days": [d.isoformat() for d in days],
        "channels": channels,
        "per_day": [{"day": d.isoformat(), **_figures(per[d], channels)} for d in days],
        "totals": totals,
    }


def _episodes(
    events: Sequence[Any], per: dict[date, _Day], since: datetime, until: datetime
) -> None:
    """Walk each session's audit rows: escalation → first reply → resolve/close."""
    escalated_at: datetime | None = None
    replied = False
    current = None
    for key, action, at, detail in events:
        if key != current:
            current, escalated_at, replied = key, None, False
        if action == "escalate":
            escalated_at, replied = at, False
            if since <= at < until:
                reason = (detail or {}).get("reason") or "unknown"
                per[at.astimezone(UTC).date()].escalations[str(reason)] += 1
            continue
        if escalated_at is None or not since <= escalated_at < until:
            continue
        day = per[escalated_at.astimezone(UTC).date()]
        if action == "reply" and not replied:
            replied = True
            day.first_response_s.append((at - escalated_at).total_seconds())
        elif action in ("resolve", "close"):
            day.resolution_s.append((at - escalated_at).total_seconds())
            escalated_at = None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _figures(d: _Day, channels: Sequence[str]) -> dict[str, Any]:
    return {
        "conversations": d.started,
        "conversations_by_channel": {ch: d.conversations.get(ch, 0) for ch in channels},
        "bot_resolved": d.bot_resolved,
        "bot_resolution_rate": round(d.bot_resolved / d.started, 4) if d.started else None,
        "escalations": sum(d.escalations.values()),
        "escalation_reasons": dict(sorted(d.escalations.items())),
        "first_responses": len(d.first_response_s),
        "first_response_p50_s": _rounded(percentile(d.first_response_s, 0.5)),
        "first_response_p90_s": _rounded(percentile(d.first_response_s, 0.9)),
        "resolutions": len(d.resolution_s),
        "resolution_p50_s": _rounded(percentile(d.resolution_s, 0.5)),
        "resolution_p90_s": _rounded(percentile(d.resolution_s, 0.9)),
        "sla_breaches": d.sla_breaches,
        "csat_count": len(d.ratings),
        "csat_average": round(sum(d.ratings) / len(d.ratings), 2) if d.ratings else None,
        "llm_input_tokens": d.input_tokens,
        "llm_output_tokens": d.output_tokens,
        "llm_cost_usd": round(d.cost_usd, 6),
    }


COLUMNS = (
    "conversations",
    "bot_resolved",
    "bot_resolution_rate",
    "escalations",
    "first_responses",
    "first_response_p50_s",
    "first_response_p90_s",
    "resolutions",
    "resolution_p50_s",
    "resolution_p90_s",
    "sla_breaches",
    "csat_count",
    "csat_average",
    "llm_input_tokens",
    "llm_output_tokens",
    "llm_cost_usd",
)
"""The scalar figures of a day (and of the totals), in CSV column order."""


def to_csv(figures: dict[str, Any]) -> str:
    """The figures of :func:`compute` as CSV (RFC 4180): one row per day, then ``total``.

    Columns: ``day``, :data:`COLUMNS`, one ``conversations_{channel}`` per channel and one
    ``escalations_{reason}`` per escalation reason; empty cells for figures with no value.
    """
    channels: list[str] = figures["channels"]
    reasons = sorted(figures["totals"]["escalation_reasons"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        ["day", *COLUMNS, *(f"conversations_{c}" for c in channels),
         *(f"escalations_{r}" for r in reasons)]
    )  # fmt: skip
    rows = [*figures["per_day"], {"day": "total", **figures["totals"]}]
    for row in rows:
        writer.writerow(
            [row["day"], *("" if row[k] is None else row[k] for k in COLUMNS),
             *(row["conversations_by_channel"].get(c, 0) for c in channels),
             *(row["escalation_reasons"].get(r, 0) for r in reasons)]
        )  # fmt: skip
    return out.getvalue()
