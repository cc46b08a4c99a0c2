"""What a patient is prescribed to send, and how often: the protocol's measures, and the
data they make expected and received (docs/reimbursement.md).

A programme's protocol (alerts/programmes.toml) prescribes measures: a weight, a
glucose, an SpO2, the ventilator's data, a questionnaire. Each is watched by one
missing-data rule (`Rule.measure`), and its frequency is that rule's parameters:

- `every_days` E: the measure is due on every E-th day of follow-up (days E, 2E...,
  day 1 being the local day the follow-up starts), for the E days ending there;
- `times` T: data points expected in those E days (a data point is one measurement
  time: a blood pressure's systolic and diastolic, a questionnaire's answers, count
  once);
- `due_hour` H: the local hour of the due day by which they are due (24: its end).

A clinician may prescribe another frequency for one patient: an override of those
parameters, recorded with its time like any other; it applies from the local day it
was made. The missing-data rule fires when a due time passes without data in its
period; the expected data of a window of days is T for each due day in it whose due
time has passed (and before the follow-up ended); the data received, for each such
day, the data points of its period, at most T.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alerts.calendar import LocalCalendar
from devices.catalogue import BY_KIND, CATALOGUE, ValueType
from devices.catalogue import VitalKind as K

__all__ = [
    "FREQUENCY",
    "MAX_EVERY_DAYS",
    "MEASURES",
    "WIDTH",
    "WINDOW_DAYS",
    "Measure",
    "Prescription",
    "count_expected",
]

I64 = npt.NDArray[np.int64]

# The parameters of a measure's rule that make its frequency.
FREQUENCY = ("every_days", "times", "due_hour")
MAX_EVERY_DAYS = 7  # the diabetes arrêté's "at least weekly": the longest period


@dataclass(frozen=True, slots=True)
class Measure:
    name: str
    kinds: frozenset[K]

    @property
    def codes(self) -> list[int]:
        return sorted(BY_KIND[k].code for k in self.kinds)


_QUESTIONNAIRE = frozenset(
    v.kind for v in CATALOGUE if v.value_type in (ValueType.GRADE, ValueType.BOOLEAN)
)

MEASURES: Mapping[str, Measure] = {
    m.name: m
    for m in (
        Measure("weight", frozenset({K.BODY_WEIGHT})),
        Measure("glucose", frozenset({K.GLUCOSE, K.GLUCOSE_CGM})),
        Measure("spo2", frozenset({K.SPO2})),
        Measure("ventilation", frozenset({K.VENTILATOR_USAGE, K.VENTILATOR_LEAK})),
        Measure("questionnaire", _QUESTIONNAIRE),
    )
}


@dataclass(frozen=True, slots=True)
class Prescription:
    """A measure's frequency from a day of follow-up on (0: its first day)."""

    from_day: int
    every_days: int
    times: int
    due_hour: float


WINDOW_DAYS = 31  # the longest window counted at once: a calendar month
WIDTH = MAX_EVERY_DAYS + WINDOW_DAYS  # a window's days and the week before it
# Windows counted at a time: a block's matrices (windows x WIDTH) stay in the CPU's caches,
# where those of a million windows (300 MB each) were written to memory and back.
BLOCK_WINDOWS = 4096


def count_expected(
    calendar: LocalCalendar,
    start_day: I64,
    first_day: I64,
    end_day: I64,
    due_after_us: I64,
    due_by_us: I64,
    prescriptions: Sequence[Sequence[Prescription]],
    counts: npt.NDArray[np.int64],
    block: int = BLOCK_WINDOWS,
) -> tuple[I64, I64]:
    """Data expected and received of one measure, per window (`block` windows at a time):
    the local days [first_day, end_day) of each (at most WINDOW_DAYS), counting the due
    days whose due time is after `due_after_us` (the start of follow-up) and at or before
    `due_by_us` (its end, the report's, now).

    `counts[w, j]` is the window's patient's data points on local day
    first_day[w] - MAX_EVERY_DAYS + j (the week before the window for the periods that
    begin before it; days before the start of follow-up are not counted).
    `start_day[w]` is the local day the patient's follow-up started, `prescriptions[w]`
    their frequencies in order of `from_day`, the first from day 0."""
    parts = [
        _count_block(
            calendar,
            start_day[at : at + block],
            first_day[at : at + block],
            end_day[at : at + block],
            due_after_us[at : at + block],
            due_by_us[at : at + block],
            prescriptions[at : at + block],
            counts[at : at + block],
        )
        for at in range(0, len(counts), block)
    ]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate([e for e, _ in parts]), np.concatenate([r for _, r in parts])


def _count_block(
    calendar: LocalCalendar,
    start_day: I64,
    first_day: I64,
    end_day: I64,
    due_after_us: I64,
    due_by_us: I64,
    prescriptions: Sequence[Sequence[Prescription]],
    counts: npt.NDArray[np.int64],
) -> tuple[I64, I64]:
    windows, width = counts.shape
    column = np.arange(width, dtype=np.int64)
    day = first_day[:, None] - MAX_EVERY_DAYS + column  # local day of each cell
    index = day - start_day[:, None]  # day of follow-up, 0 the first
    every = np.ones((windows, width), np.int64)
    times = np.zeros((windows, width), np.int64)
    hour = np.zeros((windows, width))
    # The first frequency of every window at once (most have no other), then the others.
    first = [(w, timeline[0]) for w, timeline in enumerate(prescriptions) if timeline]
    if first:
        rows = np.array([w for w, _ in first], np.int64)
        later = index[rows] >= np.array([p.from_day for _, p in first], np.int64)[:, None]
        for target, values in (
            (every, [p.every_days for _, p in first]),
            (times, [p.times for _, p in first]),
            (hour, [p.due_hour for _, p in first]),
        ):
            column_values = np.array(values, target.dtype)[:, None]
            target[rows] = np.where(later, column_values, target[rows])
    for w, timeline in enumerate(prescriptions):
        for prescribed in timeline[1:]:
            later = index[w] >= prescribed.from_day
            every[w, later] = prescribed.every_days
            times[w, later] = prescribed.times
            hour[w, later] = prescribed.due_hour
    inside = (day >= first_day[:, None]) & (day < end_day[:, None]) & (index >= 0)
    due_at = calendar.hour_of(day, hour)
    due = (
        inside
        & ((index + 1) % every == 0)
        & (due_at > due_after_us[:, None])
        & (due_at <= due_by_us[:, None])
    )
    followed = np.where(index >= 0, counts, 0)
    total = np.concatenate([np.zeros((windows, 1), np.int64), followed.cumsum(axis=1)], axis=1)
    row = np.arange(windows)[:, None]
    period = total[row, column + 1] - total[row, np.maximum(column + 1 - every, 0)]
    expected = np.where(due, times, 0).sum(axis=1)
    received = np.where(due, np.minimum(period, times), 0).sum(axis=1)
    return expected.astype(np.int64), received.astype(np.int64)
