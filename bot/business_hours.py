"""Business hours: weekly opening hours in a time zone, and deadlines counted in them.

No package in the lock does business-hours arithmetic, so this is a small, tested module on
:mod:`zoneinfo`. Opening hours are given per weekday as ``"HH:MM-HH:MM"`` ranges (several
separated by commas; ``24:00`` closes at midnight); a missing weekday is closed. Arithmetic is
done in UTC on instants made from local wall times, so daylight-saving changes shorten or
lengthen a business day as a clock on the wall would.

JSON form (what SLA policies store)::

    {"timezone": "Europe/Paris",
     "hours": {"mon": "09:00-17:00", "tue": "09:00-12:00,13:00-17:00", ...}}
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.errors import PayloadInvalid

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Weekday keys, Monday first (``date.weekday()`` order)."""

_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_MAX_DAYS = 800
"""Search horizon of :meth:`BusinessHours.add` (a target never needs more than ~2 years)."""


def _minutes(hours: str, minutes: str, *, field: str) -> int:
    h, m = int(hours), int(minutes)
    if m >= 60 or h > 24 or (h == 24 and m):
        raise PayloadInvalid(f"bad time {hours}:{minutes}", field=field)
    return h * 60 + m


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """Weekly opening hours in one time zone.

    Attributes:
        timezone: an IANA zone name (``Europe/Paris``).
        hours: per weekday (0 = Monday), sorted, non-overlapping ``(open, close)`` ranges in
            minutes after local midnight (``close`` up to 1440).
    """

    timezone: str
    hours: tuple[tuple[tuple[int, int], ...], ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BusinessHours:
        """Parse the JSON form (see the module docstring).

        Raises:
            bot.errors.PayloadInvalid: unknown zone or weekday, malformed or overlapping
                ranges, or no opening hours at all (``field`` names the culprit).
        """
        zone = data.get("timezone", "UTC")
        if not isinstance(zone, str):
            raise PayloadInvalid("timezone must be a string", field="business_hours.timezone")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise PayloadInvalid(
                f"unknown time zone {zone!r}", field="business_hours.timezone"
            ) from exc
        raw = data.get("hours")
        if not isinstance(raw, dict):
            raise PayloadInvalid("hours must be an object", field="business_hours.hours")
        unknown = set(raw) - set(WEEKDAYS)
        if unknown:
            raise PayloadInvalid(
                f"unknown weekday {sorted(unknown)[0]!r}", field="business_hours.hours"
            )
        days: list[tuple[tuple[int, int], ...]] = []
        for day in WEEKDAYS:
            spec = raw.get(day) or ""
            field = f"business_hours.hours.{day}"
            if not isinstance(spec, str):
                raise PayloadInvalid("opening hours must be a string", field=field)
            ranges: list[tuple[int, int]] = []
            for part in filter(None, (p.strip() for p in spec.split(","))):
                m = _RANGE.match(part)
                if m is None:
                    raise PayloadInvalid(f"bad range {part!r} (use HH:MM-HH:MM)", field=field)
                start = _minutes(m[1], m[2], field=field)
                end = _minutes(m[3], m[4], field=field)
                if end <= start:
                    raise PayloadInvalid(f"range {part!r} ends before it starts", field=field)
                ranges.append((start, end))
            ranges.sort()
            if any(a[1] > b[0] for a, b in itertools.pairwise(ranges)):
                raise PayloadInvalid("overlapping ranges", field=field)
            days.append(tuple(ranges))
        if not any(days):
            raise PayloadInvalid("no opening hours on any day", field="business_hours.hours")
        return cls(zone, tuple(days))

    def to_json(self) -> dict[str, Any]:
        """The JSON form (closed days left out)."""

        def fmt(minutes: int) -> str:
            return f"{minutes // 60:02d}:{minutes % 60:02d}"

        return {
            "timezone": self.timezone,
            "hours": {
                WEEKDAYS[i]: ",".join(f"{fmt(a)}-{fmt(b)}" for a, b in ranges)
                for i, ranges in enumerate(self.hours)
                if ranges
            },
        }

    def _windows(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's opening ranges as UTC instants."""
        zone = ZoneInfo(self.timezone)

        def at(minutes: int) -> datetime:
            if minutes >= 24 * 60:
                local = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
            else:
                local = datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=zone)
            return local.astimezone(UTC)

        return [(at(a), at(b)) for a, b in self.hours[day.weekday()]]

    def add(self, start: datetime, seconds: float) -> datetime:
        """The instant ``seconds`` business seconds after ``start``.

        Args:
            start: an aware datetime (any zone).
            seconds: business time to add, in seconds (>= 0).

        Returns:
            The deadline, in UTC. With ``seconds == 0`` it is ``start`` moved to the next
            opening when ``start`` falls outside business hours.
        """
        now = start.astimezone(UTC)
        left = timedelta(seconds=max(0.0, seconds))
        day = now.astimezone(ZoneInfo(self.timezone)).date() - timedelta(days=1)
        for _ in range(_MAX_DAYS):
            for opens, closes in self._windows(day):
                begin = max(opens, now)
                if begin >= closes:
                    continue
                if left <= closes - begin:
                    return begin + left
                left -= closes - begin
            day += timedelta(days=1)
        raise PayloadInvalid("business hours too sparse for this target", field="business_hours")

    def is_open(self, at: datetime) -> bool:
        """Whether ``at`` falls inside opening hours."""
        moment = at.astimezone(UTC)
        day = moment.astimezone(ZoneInfo(self.timezone)).date()
        return any(
            opens <= moment < closes
            for d in (day - timedelta(days=1), day)
            for opens, closes in self._windows(d)
        )
