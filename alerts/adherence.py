"""The data each patient was prescribed and sent, read from PostgreSQL: the adherence
rules at the end of months 1 and 2 of follow-up, and the evidence report's months
(docs/reimbursement.md). One computation for both (alerts.protocol.count_expected).

A window is a patient's local days [first_day, end_day), at most a calendar month.
A measure's frequency in a window is the programme's protocol, changed from the local
day a clinician prescribed another (an override of its rule's frequency parameters,
kept with its time in threshold_override_history). A data point is one measurement
time of the measure's kinds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alerts.calendar import LocalCalendar, calendar
from alerts.programmes import AlertConfig, measure_rule
from alerts.protocol import (
    FREQUENCY,
    MAX_EVERY_DAYS,
    MEASURES,
    WIDTH,
    WINDOW_DAYS,
    Prescription,
    count_expected,
)
from devices.registry import Programme
from ingest.platform import Connection

__all__ = [
    "FollowUp",
    "MonthCheck",
    "Window",
    "check_months",
    "expected_data",
    "follow_ups",
    "store_checks",
    "stored_checks",
]

I64 = npt.NDArray[np.int64]
MEASURE_NAMES = list(MEASURES)
_NEVER = np.iinfo(np.int64).max  # a follow-up not ended


@dataclass(frozen=True, slots=True)
class FollowUp:
    patient_key: int
    programme: Programme
    enrolled_us: int
    discharged_us: int | None


@dataclass(frozen=True, slots=True)
class Window:
    patient_key: int
    first_day: int  # local day (alerts.calendar)
    end_day: int  # the day after the last
    due_by_us: int  # due times after this are not counted (now, the report's end)


@dataclass(frozen=True, slots=True)
class MonthCheck:
    """Month 1 or 2 of a patient's follow-up, checked: per prescribed measure, the data
    expected and received."""

    patient_key: int
    month: int
    data: Mapping[str, tuple[int, int]]  # measure -> (expected, received)

    @property
    def worst(self) -> tuple[str, int, int] | None:
        """The measure with the lowest share of its expected data received (None if
        nothing was expected)."""
        shares = [(r / e, m, e, r) for m, (e, r) in self.data.items() if e > 0]
        if not shares:
            return None
        _, measure, expected, received = min(shares)
        return measure, expected, received

    def failed(self, at_most_percent: float = 50.0) -> list[str]:
        """The measures of which at most this share of the expected data came."""
        return [m for m, (e, r) in self.data.items() if e > 0 and r * 100 <= at_most_percent * e]


async def follow_ups(conn: Connection, patient_keys: Sequence[int]) -> dict[int, FollowUp]:
    rows = await conn.fetch(
        """
        SELECT patient_key, programme,
               (extract(epoch FROM enrolled_at) * 1e6)::bigint AS enrolled_us,
               (extract(epoch FROM discharged_at) * 1e6)::bigint AS discharged_us
        FROM patients WHERE patient_key = ANY($1::int[])
        """,
        list(patient_keys),
    )
    return {
        r["patient_key"]: FollowUp(
            r["patient_key"], Programme(r["programme"]), r["enrolled_us"], r["discharged_us"]
        )
        for r in rows
    }


async def check_months(
    conn: Connection,
    config: AlertConfig,
    months: Sequence[tuple[int, int]],
    now_us: int,
) -> list[MonthCheck]:
    """Months 1 and 2 of follow-up of these (patient key, month)."""
    patients = await follow_ups(conn, [key for key, _ in months])
    days = calendar(config.timezone.key)
    wanted = [(key, month) for key, month in months if key in patients]
    # The calendar an array at a time: on one value at a time, numpy costs microseconds.
    start = days.day_of(np.array([patients[key].enrolled_us for key, _ in wanted], np.int64))
    number = np.array([month for _, month in wanted], np.int64)
    firsts = days.add_months(start, number - 1).tolist()
    ends = days.add_months(start, number).tolist()
    windows = [
        Window(key, first, end, now_us)
        for (key, _), first, end in zip(wanted, firsts, ends, strict=True)
    ]
    data = {
        name: (expected.tolist(), received.tolist())
        for name, (expected, received) in (
            await expected_data(conn, config, patients, windows)
        ).items()
    }
    return [
        MonthCheck(
            key,
            month,
            {
                measure: (data[measure][0][w], data[measure][1][w])
                for measure in config.programmes[patients[key].programme].measures
            },
        )
        for w, (key, month) in enumerate(wanted)
    ]


async def store_checks(conn: Connection, checks: Sequence[MonthCheck]) -> None:
    """Keep the checks as made (the first of each holds)."""
    rows = [(c.patient_key, c.month, m, e, r) for c in checks for m, (e, r) in c.data.items()]
    await conn.executemany(
        "INSERT INTO follow_up_checks (patient_key, month, measure, expected, received) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        rows,
    )


async def stored_checks(conn: Connection, patient_keys: Sequence[int]) -> list[MonthCheck]:
    found: dict[tuple[int, int], dict[str, tuple[int, int]]] = defaultdict(dict)
    for r in await conn.fetch(
        "SELECT patient_key, month, measure, expected, received FROM follow_up_checks "
        "WHERE patient_key = ANY($1::int[])",
        list(patient_keys),
    ):
        found[r["patient_key"], r["month"]][r["measure"]] = (r["expected"], r["received"])
    return [MonthCheck(key, month, data) for (key, month), data in found.items()]


async def expected_data(
    conn: Connection,
    config: AlertConfig,
    patients: Mapping[int, FollowUp],
    windows: Sequence[Window],
) -> dict[str, tuple[I64, I64]]:
    """Per measure, the data expected and received in each window (0 and 0 where the
    patient's programme does not prescribe it). The follow-up bounds every window: due
    times after the enrolment, and up to the discharge."""
    empty = np.zeros(len(windows), np.int64)
    found = {name: (empty.copy(), empty.copy()) for name in MEASURE_NAMES}
    if not windows:
        return found
    days = calendar(config.timezone.key)
    # Each window's fields as arrays, read once: a million windows, five measures.
    follow = [patients[w.patient_key] for w in windows]
    key = np.array([w.patient_key for w in windows], np.int64)
    first_day = np.array([w.first_day for w in windows], np.int64)
    end_day = np.array([w.end_day for w in windows], np.int64)
    length = end_day - first_day
    wrong = (length <= 0) | (length > WINDOW_DAYS)
    if wrong.any():
        raise ValueError(f"a window of {length[wrong][0]} days")
    enrolled_us = np.array([f.enrolled_us for f in follow], np.int64)
    discharged_us = np.array(
        [_NEVER if f.discharged_us is None else f.discharged_us for f in follow], np.int64
    )
    due_by_us = np.minimum(np.array([w.due_by_us for w in windows], np.int64), discharged_us)
    programmes = list(config.programmes)
    number = {name: n for n, name in enumerate(programmes)}
    programme = np.array([number[f.programme] for f in follow], np.int64)
    keys = np.unique(key).tolist()
    timelines = await _prescriptions(conn, config, days, {k: patients[k] for k in keys})
    counts = await _day_counts(
        conn, days, keys, int(first_day.min()) - MAX_EVERY_DAYS, int(end_day.max())
    )
    start_day = days.day_of(enrolled_us)
    for m, name in enumerate(MEASURE_NAMES):
        prescribes = np.array([name in config.programmes[p].measures for p in programmes])
        rows = np.flatnonzero(prescribes[programme])
        if not len(rows):
            continue
        expected, received = count_expected(
            days,
            start_day[rows],
            first_day[rows],
            end_day[rows],
            enrolled_us[rows],
            due_by_us[rows],
            [timelines[k, name] for k in key[rows].tolist()],
            _matrix(counts, m, key[rows], first_day[rows]),
        )
        found[name][0][rows] = expected
        found[name][1][rows] = received
    return found


def _matrix(counts: Mapping[str, I64], measure: int, patient_key: I64, first_day: I64) -> I64:
    """Each window's data points per day, from the week before its first day."""
    matrix = np.zeros((len(patient_key), WIDTH), np.int64)
    mine = counts["measure"] == measure
    key, day, n = counts["patient_key"][mine], counts["day"][mine], counts["n"][mine]
    # Each count goes to every window of its patient: the windows sorted by patient, the
    # run of each count's patient found by bisection, and the runs expanded.
    keys = np.asarray(patient_key, np.int64)
    order = np.argsort(keys, kind="stable")
    lo = np.searchsorted(keys[order], key, side="left")
    runs = np.searchsorted(keys[order], key, side="right") - lo
    count = np.repeat(np.arange(len(key)), runs)
    within = np.arange(len(count)) - np.repeat(np.cumsum(runs) - runs, runs)
    window = order[np.repeat(lo, runs) + within]
    column = day[count] - first_day[window] + MAX_EVERY_DAYS
    inside = (column >= 0) & (column < WIDTH)
    np.add.at(matrix, (window[inside], column[inside]), n[count][inside])
    return matrix


async def _prescriptions(
    conn: Connection,
    config: AlertConfig,
    days: LocalCalendar,
    patients: Mapping[int, FollowUp],
) -> dict[tuple[int, str], list[Prescription]]:
    """Each patient's frequencies of each measure of their protocol, in time order."""
    names = {f"{measure_rule(m).id}.{n}": (m, n) for m in MEASURE_NAMES for n in FREQUENCY}
    changes: dict[int, list[tuple[int, str, float | None]]] = defaultdict(list)
    for r in await conn.fetch(
        """
        SELECT patient_key, parameter, value,
               (extract(epoch FROM changed_at) * 1e6)::bigint AS at_us
        FROM threshold_override_history
        WHERE patient_key = ANY($1::int[]) AND parameter = ANY($2::text[])
        ORDER BY id
        """,
        list(patients),
        list(names),
    ):
        changes[r["patient_key"]].append((r["at_us"], r["parameter"], r["value"]))
    protocols = {
        (name, measure): {
            n: programme.parameters[f"{measure_rule(measure).id}.{n}"] for n in FREQUENCY
        }
        for name, programme in config.programmes.items()
        for measure in programme.measures
    }
    # The protocol from day 0, one list for all who kept it (most: a million at a time).
    kept = {of: [_prescription(0, protocol)] for of, protocol in protocols.items()}
    timelines = {}
    for key, patient in patients.items():
        if key not in changes:
            for measure in config.programmes[patient.programme].measures:
                timelines[key, measure] = kept[patient.programme, measure]
            continue
        start = int(days.day_of(patient.enrolled_us))
        for measure in config.programmes[patient.programme].measures:
            protocol = protocols[patient.programme, measure]
            current = dict(protocol)
            timeline = [_prescription(0, current)]
            for at_us, parameter, value in changes.get(key, []):
                changed_measure, name = names[parameter]
                if changed_measure != measure:
                    continue
                current[name] = protocol[name] if value is None else value
                from_day = max(0, int(days.day_of(at_us)) - start)
                if timeline[-1].from_day == from_day:
                    timeline.pop()  # changed again the same day: the last one holds
                timeline.append(_prescription(from_day, current))
            timelines[key, measure] = timeline
    return timelines


def _prescription(from_day: int, frequency: Mapping[str, float]) -> Prescription:
    return Prescription(
        from_day, int(frequency["every_days"]), int(frequency["times"]), frequency["due_hour"]
    )


async def _day_counts(
    conn: Connection, days: LocalCalendar, keys: Sequence[int], first_day: int, end_day: int
) -> dict[str, I64]:
    """Data points per patient, measure and local day over [first_day, end_day)."""
    codes = [(code, m) for m, name in enumerate(MEASURE_NAMES) for code in MEASURES[name].codes]
    rows = await conn.fetch(
        """
        SELECT r.patient_key, m.measure,
               ((r.measured_at AT TIME ZONE $5)::date - date '1970-01-01') AS day,
               count(DISTINCT r.measured_at) AS n
        FROM readings r JOIN unnest($2::smallint[], $3::int[]) AS m(kind, measure)
             ON m.kind = r.kind
        WHERE r.patient_key = ANY($1::int[])
          AND r.measured_at >= to_timestamp($4::float8 / 1e6)
          AND r.measured_at < to_timestamp($6::float8 / 1e6)
        GROUP BY 1, 2, 3
        """,
        list(keys),
        [c for c, _ in codes],
        [m for _, m in codes],
        int(days.start_of(first_day)),
        days.timezone.key,
        int(days.start_of(end_day)),
    )
    return {
        "patient_key": np.array([r["patient_key"] for r in rows], np.int64),
        "measure": np.array([r["measure"] for r in rows], np.int64),
        "day": np.array([r["day"] for r in rows], np.int64),
        "n": np.array([r["n"] for r in rows], np.int64),
    }
