"""Business-hours arithmetic: deadlines skip nights, weekends and follow DST changes."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.business_hours import BusinessHours
from bot.errors import PayloadInvalid

PARIS = ZoneInfo("Europe/Paris")
WEEKDAYS_9_TO_5 = {
    "timezone": "Europe/Paris",
    "hours": {d: "09:00-17:00" for d in ("mon", "tue", "wed", "thu", "fri")},
}


def paris(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=PARIS)


def test_within_a_day() -> None:
    hours = BusinessHours.from_json(WEEKDAYS_9_TO_5)
    # Wednesday 2026-12-02 10:00 + 2 h = 12:00 the same day.
    assert hours.add(paris(2026, 12, 2, 10, 0), 2 * 3600) == paris(2026, 12, 2, 12, 0)


def test_rolls_over_the_night_and_the_weekend() -> None:
    hours = BusinessHours.from_json(WEEKDAYS_9_TO_5)
    # Friday 16:00 + 2 h: 1 h on Friday, 1 h on Monday from 09:00.
    assert hours.add(paris(2026, 12, 4, 16, 0), 2 * 3600) == paris(2026, 12, 7, 10, 0)
    # Saturday evening + 30 min: Monday 09:30.
    assert hours.add(paris(2026, 12, 5, 20, 0), 1800) == paris(2026, 12, 7, 9, 30)
    # Before opening: counted from 09:00.
    assert hours.add(paris(2026, 12, 2, 6, 0), 60) == paris(2026, 12, 2, 9, 1)


def test_split_days_and_midnight() -> None:
    hours = BusinessHours.from_json(
        {"timezone": "UTC", "hours": {"mon": "09:00-12:00, 13:00-17:00", "tue": "22:00-24:00"}}
    )
    monday = datetime(2026, 12, 7, 11, 30, tzinfo=UTC)
    assert hours.add(monday, 3600) == datetime(2026, 12, 7, 13, 30, tzinfo=UTC)
    # Monday 16:00 + 3 h: 1 h Monday, 2 h Tuesday night ending at midnight.
    assert hours.add(datetime(2026, 12, 7, 16, tzinfo=UTC), 3 * 3600) == datetime(
        2026, 12, 9, 0, 0, tzinfo=UTC
    )
    assert hours.is_open(monday)
    assert not hours.is_open(datetime(2026, 12, 7, 12, 30, tzinfo=UTC))


def test_daylight_saving_day_is_counted_as_the_wall_clock_runs() -> None:
    hours = BusinessHours.from_json({"timezone": "Europe/Paris", "hours": {"sun": "00:00-06:00"}})
    # 2027-03-28 clocks jump 02:00 -> 03:00 in Paris: that Sunday has 5 real hours open.
    start = paris(2027, 3, 28, 0, 0)
    assert hours.add(start, 5 * 3600) == paris(2027, 3, 28, 6, 0)
    assert hours.add(start, 5 * 3600 + 60) == paris(2027, 4, 4, 0, 1)


def test_round_trip_and_bad_input() -> None:
    hours = BusinessHours.from_json(WEEKDAYS_9_TO_5)
    assert BusinessHours.from_json(hours.to_json()) == hours
    for bad, field in (
        ({"timezone": "Mars/Olympus", "hours": {"mon": "09:00-17:00"}}, "timezone"),
        ({"hours": {"mon": "9-5"}}, "mon"),
        ({"hours": {"mon": "17:00-09:00"}}, "mon"),
        ({"hours": {"mon": "09:00-12:00,11:00-13:00"}}, "mon"),
        ({"hours": {"funday": "09:00-12:00"}}, "hours"),
        ({"hours": {}}, "hours"),
    ):
        with pytest.raises(PayloadInvalid) as info:
            BusinessHours.from_json(bad)
        assert field in (info.value.field or "")
