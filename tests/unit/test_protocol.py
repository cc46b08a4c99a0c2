"""Protocols: local days across clock changes, the data a prescription expects and the
data received against it, and the ranges every parameter must keep."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.calendar import calendar
from alerts.catalogue import PATIENT_PARAMETERS, RULES
from alerts.programmes import ConfigError, check_parameter, load_config
from alerts.protocol import MAX_EVERY_DAYS, WIDTH, Prescription, count_expected
from tests.reference_protocol import reference_count

PARIS = ZoneInfo("Europe/Paris")
DAYS = calendar("Europe/Paris")


def us(moment: datetime) -> int:
    return int(moment.timestamp() * 1e6)


@pytest.mark.parametrize("when", [date(2026, 3, 29), date(2026, 10, 25), date(2026, 6, 1)])
def test_local_days_and_hours_hold_on_the_days_the_clock_changes(when: date) -> None:
    day = DAYS.day_of_date(when)
    for hour in (0.0, 1.0, 9.0, 12.5, 20.0):
        wall = datetime.combine(when, datetime.min.time()) + timedelta(hours=hour)
        assert int(DAYS.hour_of(day, hour)) == us(wall.replace(tzinfo=PARIS))
    assert int(DAYS.hour_of(day, 24.0)) == int(DAYS.start_of(day + 1))
    just_before_midnight = us(datetime.combine(when, datetime.max.time(), PARIS))
    assert int(DAYS.day_of(just_before_midnight)) == day
    assert int(DAYS.day_of(int(DAYS.start_of(day + 1)))) == day + 1


@pytest.mark.parametrize(
    ("start", "months", "landed"),
    [
        (date(2026, 1, 15), 1, date(2026, 2, 15)),
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),
        (date(2026, 1, 31), 2, date(2026, 3, 31)),
        (date(2026, 11, 30), 3, date(2027, 2, 28)),
    ],
)
def test_months_of_follow_up_are_calendar_months(start: date, months: int, landed: date) -> None:
    assert DAYS.date_of(int(DAYS.add_months(DAYS.day_of_date(start), months))) == landed


@dataclass(frozen=True)
class Case:
    start: date
    first: date
    end: date
    enrolled: datetime
    due_by: datetime
    timeline: list[Prescription]
    points: dict[date, int]


@st.composite
def windows(draw: st.DrawFn) -> Case:
    start = date(2026, 9, 1) + timedelta(days=draw(st.integers(0, 90)))
    first = start + timedelta(days=draw(st.integers(-10, 40)))
    end = first + timedelta(days=draw(st.integers(1, 31)))
    enrolled = datetime.combine(start, datetime.min.time(), PARIS) + timedelta(
        hours=draw(st.integers(0, 23))
    )
    due_by = datetime.combine(first, datetime.min.time(), PARIS) + timedelta(
        hours=draw(st.integers(0, 24 * 35))
    )
    timeline = [Prescription(0, draw(st.integers(1, 7)), draw(st.integers(1, 3)), 24.0)]
    for _ in range(draw(st.integers(0, 2))):
        timeline.append(
            Prescription(
                timeline[-1].from_day + draw(st.integers(1, 20)),
                draw(st.integers(1, 7)),
                draw(st.integers(1, 3)),
                draw(st.sampled_from([9.0, 12.0, 24.0])),
            )
        )
    points = {
        first + timedelta(days=d): draw(st.integers(0, 3))
        for d in draw(st.lists(st.integers(-MAX_EVERY_DAYS, 30), max_size=30))
    }
    return Case(start, first, end, enrolled, due_by, timeline, points)


@settings(max_examples=300, deadline=None)
@given(windows())
def test_expected_and_received_data_follow_the_prescription(case: Case) -> None:
    start, first, end, enrolled, due_by = (
        case.start,
        case.first,
        case.end,
        case.enrolled,
        case.due_by,
    )
    timeline, points = case.timeline, case.points
    counts = np.zeros((1, WIDTH), np.int64)
    for day, n in points.items():
        counts[0, (day - first).days + MAX_EVERY_DAYS] = n
    got = count_expected(
        DAYS,
        np.array([DAYS.day_of_date(start)]),
        np.array([DAYS.day_of_date(first)]),
        np.array([DAYS.day_of_date(end)]),
        np.array([us(enrolled)]),
        np.array([us(due_by)]),
        [timeline],
        counts,
    )
    expected = reference_count(start, first, end, enrolled, due_by, timeline, points)
    assert (int(got[0][0]), int(got[1][0])) == expected


def test_weekly_glucose_is_four_of_four_in_a_month_of_weekly_readings() -> None:
    start = date(2026, 10, 1)
    points = {start + timedelta(days=7 * k + 2): 1 for k in range(5)}
    counts = np.zeros((1, WIDTH), np.int64)
    for day, n in points.items():
        counts[0, (day - start).days + MAX_EVERY_DAYS] = n
    expected, received = count_expected(
        DAYS,
        np.array([DAYS.day_of_date(start)]),
        np.array([DAYS.day_of_date(start)]),
        np.array([DAYS.day_of_date(date(2026, 11, 1))]),
        np.array([us(datetime(2026, 10, 1, 9, tzinfo=PARIS))]),
        np.array([us(datetime(2026, 12, 1, tzinfo=UTC))]),
        [[Prescription(0, 7, 1, 24.0)]],
        counts,
    )
    assert (int(expected[0]), int(received[0])) == (4, 4)  # due on days 7, 14, 21, 28


def test_every_parameter_has_a_finite_documented_range() -> None:
    everything = [*PATIENT_PARAMETERS.values()]
    everything += [p for rule in RULES.values() for p in rule.parameters.values()]
    for parameter in everything:
        low, high = parameter.within
        assert math.isfinite(low)
        assert math.isfinite(high)
        assert low <= high
        if not math.isnan(parameter.default):
            assert parameter.refusal(parameter.default) is None


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("glucose_missing.every_days", 1e8, "outside 1-7"),
        ("glucose_missing.every_days", float("nan"), "not a number"),
        ("glucose_missing.every_days", float("inf"), "not a number"),
        ("glucose_missing.every_days", 0, "outside"),
        ("glucose_missing.every_days", -3, "outside"),
        ("glucose_missing.every_days", 2.5, "whole"),
        ("hf_weight_missing.due_hour", 36, "outside 1-24"),
        ("hf_weight_missing.enabled", 0, "cannot be disabled"),
        ("hf_weight_missing.enabled", 0.5, r"1 \(on\) or 0 \(off\)"),
        ("spo2_scale1.red_at_or_below", 150, "outside 50-100"),
        ("patient.spo2_scale", 3, "outside 1-2"),
        ("no_such_rule.days", 1, "unknown parameter"),
    ],
)
def test_values_out_of_range_are_refused(name: str, value: float, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        check_parameter(name, value)


def test_the_programmes_protocols_are_their_missing_data_rules() -> None:
    config = load_config()
    diabetes = config.programmes[next(p for p in config.programmes if p.value == "diabetes")]
    assert diabetes.measures == ("glucose",)
    assert "glucose_missing" in diabetes.rules
    assert diabetes.parameters["glucose_missing.every_days"] == 7


@settings(max_examples=50, deadline=None)
@given(st.lists(windows(), min_size=0, max_size=12), st.integers(1, 5))
def test_windows_counted_in_blocks_count_as_all_at_once(cases: list[Case], block: int) -> None:
    counts = np.zeros((len(cases), WIDTH), np.int64)
    for w, case in enumerate(cases):
        for day, n in case.points.items():
            counts[w, (day - case.first).days + MAX_EVERY_DAYS] = n
    args = (
        DAYS,
        np.array([DAYS.day_of_date(c.start) for c in cases], np.int64),
        np.array([DAYS.day_of_date(c.first) for c in cases], np.int64),
        np.array([DAYS.day_of_date(c.end) for c in cases], np.int64),
        np.array([us(c.enrolled) for c in cases], np.int64),
        np.array([us(c.due_by) for c in cases], np.int64),
        [c.timeline for c in cases],
        counts,
    )
    whole = count_expected(*args, block=max(1, len(cases)))
    blocks = count_expected(*args, block=block)
    assert [a.tolist() for a in blocks] == [a.tolist() for a in whole]
    assert [a.dtype for a in blocks] == [np.dtype(np.int64)] * 2
