"""The reimbursement evidence of a period (docs/reimbursement.md).

Per patient and calendar month: the data each prescribed measure expected and the data
received (alerts.adherence), and whether the month may be billed, for the operator's
forfait and the exploitant's, with the reasons when it may not. Per patient: the
adherence checks of months 1 and 2 of follow-up (stored by ingest when each month
ended, else computed from the readings), and the data of every month of follow-up that
ended in the period. Per programme and month: the mean active file and its tier.
"""

from __future__ import annotations

import functools
import hashlib
import tomllib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alerts.adherence import (
    FollowUp,
    MonthCheck,
    Window,
    expected_data,
    stored_checks,
)
from alerts.calendar import LocalCalendar, calendar
from alerts.programmes import AlertConfig
from devices.registry import Programme
from ingest.platform import ConfigurationError, Connection

__all__ = [
    "FollowUpMonth",
    "PatientMonth",
    "Reason",
    "Reimbursement",
    "Tariffs",
    "load_tariffs",
    "reimbursement",
]


class Reason(StrEnum):
    """Why a patient's month may not be billed."""

    ENROLLED_DURING_MONTH = "enrolled_during_month"
    DISCHARGED_DURING_MONTH = "discharged_during_month"
    PRESCRIPTION_ENDED = "prescription_ended"
    ADHERENCE_M1_FAILED = "adherence_m1_failed"
    ADHERENCE_M2_FAILED = "adherence_m2_failed"
    NOT_BILLABLE = "not_billable"  # the programme is not an activity of the LATM list


# -- tariffs ------------------------------------------------------------------------------


class _Billing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    adherence_more_than_percent: float = Field(ge=0, le=100)
    prescription_months: int = Field(ge=1, le=12)
    whole_months_only: bool


class _Programme(BaseModel):
    model_config = ConfigDict(extra="forbid")
    billable: bool = True
    operator_eur: float = Field(default=0, ge=0, le=1000)
    exploitant_eur: float = Field(default=0, ge=0, le=1000)


class _Tier(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_patients: int = Field(ge=0)
    share: float = Field(ge=0, le=1)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    billing: _Billing
    programme: dict[Programme, _Programme]
    active_file_tiers: list[_Tier] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Tariffs:
    billing: _Billing
    programmes: Mapping[Programme, _Programme]
    tiers: Sequence[_Tier]  # by from_patients, the first from 0
    sha256: str

    def tier(self, mean_active_file: float) -> tuple[int, float]:
        """The tier (1 the first) of a mean active file, and the share it pays."""
        number = max(i for i, t in enumerate(self.tiers) if t.from_patients <= mean_active_file)
        return number + 1, self.tiers[number].share


def load_tariffs(path: Path | None = None) -> Tariffs:
    data = (
        path.read_bytes()
        if path is not None
        else (resources.files("ingest.report") / "tariffs.toml").read_bytes()
    )
    try:
        raw = _File.model_validate(tomllib.loads(data.decode()))
    except (ValidationError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"tariffs file: {error}") from error
    missing = set(Programme) - set(raw.programme)
    if missing:
        raise ConfigurationError(f"tariffs file: no [programme.{sorted(missing)[0]}]")
    tiers = sorted(raw.active_file_tiers, key=lambda t: t.from_patients)
    if tiers[0].from_patients != 0:
        raise ConfigurationError("tariffs file: the first active-file tier is from 0 patients")
    return Tariffs(raw.billing, raw.programme, tiers, hashlib.sha256(data).hexdigest())


# -- what the report holds ----------------------------------------------------------------


@dataclass(slots=True)
class PatientMonth:
    """A calendar month of a patient's follow-up: a row of the usage-control extract."""

    patient_id: str
    programme: Programme
    month: date  # its first day
    followed_from: date
    followed_to: date | None  # the last day followed in the month, None if still followed
    data: Mapping[str, tuple[int, int]]  # prescribed measure -> (expected, received)
    checks: Mapping[int, MonthCheck]  # months 1 and 2 of follow-up judged before it began
    reasons: list[Reason] = field(default_factory=list)
    operator_eur: float = 0.0
    exploitant_eur: float = 0.0

    @property
    def eligible(self) -> bool:
        return not self.reasons


@dataclass(frozen=True, slots=True)
class FollowUpMonth:
    """A month of follow-up (1 from the enrolment) that ended in the period."""

    patient_id: str
    programme: Programme
    number: int
    first: date
    last: date
    data: Mapping[str, tuple[int, int]]
    check: MonthCheck | None  # months 1 and 2


@dataclass(frozen=True, slots=True)
class ActiveFile:
    mean: float
    tier: int
    share: float


@dataclass(frozen=True, slots=True)
class Reimbursement:
    months: list[date]  # the calendar months wholly in the period
    patient_months: list[PatientMonth]
    follow_up_months: list[FollowUpMonth]
    active_file: Mapping[tuple[date, Programme], ActiveFile]
    more_than_percent: float
    tariffs_sha256: str

    def figures(self) -> dict[str, Any]:
        """The report's part (report.json): per month and programme, and the checks of
        months 1 and 2 made in the period with the patients who failed them."""
        months = []
        for month in self.months:
            by_programme: dict[str, Any] = {}
            rows = [r for r in self.patient_months if r.month == month]
            for programme in sorted({r.programme for r in rows}):
                mine = [r for r in rows if r.programme is programme]
                active = self.active_file[month, programme]
                reasons = Counter(reason.value for r in mine for reason in r.reasons)
                by_programme[programme.value] = {
                    "mean_active_file": round(active.mean, 2),
                    "tier": active.tier,
                    "tier_share": active.share,
                    "patients": len(mine),
                    "eligible": sum(r.eligible for r in mine),
                    "not_eligible_by_reason": dict(sorted(reasons.items())),
                    "operator_eur": round(sum(r.operator_eur for r in mine), 2),
                    "exploitant_eur": round(sum(r.exploitant_eur for r in mine), 2),
                }
            months.append({"month": f"{month:%Y-%m}", "programmes": by_programme})
        checks: dict[str, Any] = {}
        for number in (1, 2):
            made = [f for f in self.follow_up_months if f.number == number and f.check]
            failed = []
            for f in made:
                assert f.check is not None
                measures = f.check.failed(self.more_than_percent)
                if measures:
                    failed.append(
                        {
                            "patient_id": f.patient_id,
                            "programme": f.programme.value,
                            "measures": {
                                m: {"expected": f.check.data[m][0], "received": f.check.data[m][1]}
                                for m in measures
                            },
                        }
                    )
            checks[f"month_{number}"] = {
                "checked": len(made),
                "passed": len(made) - len(failed),
                "failed": failed,
            }
        return {
            "calendar_months": months,
            "adherence_checks": checks,
            "more_than_percent": self.more_than_percent,
            "tariffs_sha256": self.tariffs_sha256,
        }


# -- computing it -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Patient:
    key: int
    patient_id: str
    follow_up: FollowUp
    start_day: int  # local day of the enrolment
    last_day: int | None  # local day of the discharge
    prescription_ends_us: int
    judged_on: tuple[int, int]  # the local days months 1 and 2 end (at their midnight)

    def check_day(self, month: int) -> int:
        """The local day month 1 or 2 of follow-up ends at: the day it is judged."""
        return self.judged_on[month - 1]


async def reimbursement(
    conn: Connection,
    config: AlertConfig,
    tariffs: Tariffs,
    start: datetime,
    end: datetime,
    programme: str | None,
    now_us: int,
) -> Reimbursement:
    days = _Days(calendar(config.timezone.key))
    start_us, end_us = int(start.timestamp() * 1e6), int(end.timestamp() * 1e6)
    until_us = min(end_us, now_us)
    patients = await _followed(conn, days, tariffs, start, end, programme)
    follow_ups = {p.key: p.follow_up for p in patients}
    months = _whole_months(days, start_us, end_us)

    # Months 1 and 2 of follow-up that ended by `until_us`: as ingest checked them, else
    # computed here with the rest.
    due = _due_checks(days, patients, until_us)
    checks = await _stored_checks(conn, patients, due)
    unchecked = [(p, n) for p, n in due if (p.key, n) not in checks]

    # Calendar months: the extract's rows.
    rows: list[tuple[_Patient, date]] = []
    windows = []
    for p in patients:
        for month in months:
            month_first = days.day_of_date(month)
            month_after = int(days.add_months(month_first, 1))
            if p.start_day < month_after and (p.last_day is None or p.last_day >= month_first):
                rows.append((p, month))
                windows.append(Window(p.key, month_first, month_after, until_us))

    # Months of follow-up that ended in the period (those of months 1 and 2 checked are the
    # checks' windows: no window of their own).
    checked = {(p.key, n) for p, n in due}
    ended: list[tuple[_Patient, int, int | None]] = []  # and their window
    for p in patients:
        number = 1
        while True:
            first = int(days.add_months(p.start_day, number - 1))
            after = int(days.add_months(p.start_day, number))
            ends_us = int(days.start_of(after))
            if ends_us > until_us or (p.last_day is not None and first > p.last_day):
                break
            if ends_us > start_us:
                if (p.key, number) in checked:
                    ended.append((p, number, None))
                else:
                    ended.append((p, number, len(windows)))
                    windows.append(Window(p.key, first, after, until_us))
            number += 1

    # One count of the data for every window: the months, the follow-up, the checks.
    first_check = len(windows)
    for p, n in unchecked:
        first = int(days.add_months(p.start_day, n - 1))
        windows.append(Window(p.key, first, int(days.add_months(p.start_day, n)), until_us))
    data = _as_lists(await expected_data(conn, config, follow_ups, windows))
    checks.update(
        {
            (p.key, n): MonthCheck(p.key, n, _data(config, p, data, first_check + w))
            for w, (p, n) in enumerate(unchecked)
        }
    )
    checks_of: dict[int, list[tuple[int, MonthCheck]]] = defaultdict(list)
    for (key, n), c in checks.items():
        checks_of[key].append((n, c))
    patient_months = [
        PatientMonth(
            p.patient_id,
            p.follow_up.programme,
            month,
            max(days.date_of(p.start_day), month),
            _last_followed(days, p, month),
            _data(config, p, data, w),
            {
                n: c
                for n, c in checks_of.get(p.key, ())
                if p.check_day(n) <= days.day_of_date(month)
            },
        )
        for w, (p, month) in enumerate(rows)
    ]
    active_file = _active_file(days, tariffs, patients, months)
    for (p, month), row in zip(rows, patient_months, strict=True):
        row.reasons = _reasons(days, tariffs, p, month, checks)
        price = tariffs.programmes[p.follow_up.programme]
        if row.eligible:
            row.operator_eur = price.operator_eur
            row.exploitant_eur = round(
                price.exploitant_eur * active_file[month, p.follow_up.programme].share, 2
            )
    follow_up_months = [
        FollowUpMonth(
            p.patient_id,
            p.follow_up.programme,
            number,
            days.date_of(int(days.add_months(p.start_day, number - 1))),
            days.date_of(int(days.add_months(p.start_day, number)) - 1),
            checks[p.key, number].data if w is None else _data(config, p, data, w),
            checks.get((p.key, number)),
        )
        for p, number, w in ended
    ]
    return Reimbursement(
        months,
        patient_months,
        follow_up_months,
        active_file,
        tariffs.billing.adherence_more_than_percent,
        tariffs.sha256,
    )


class _Days:
    """The calendar's arithmetic on single days, remembered: the report asks it about each
    of a million patients, about the same few hundred days (numpy on one value costs
    microseconds: 13 minutes for 1M patients' month)."""

    def __init__(self, days: LocalCalendar) -> None:
        self._days = days
        self.add_months = functools.cache(self._add_months)
        self.start_of = functools.cache(self._start_of)
        self.day_of_date = functools.cache(days.day_of_date)
        self.date_of = functools.cache(days.date_of)

    def day_of(self, at_us: Sequence[int] | int) -> npt.NDArray[np.int64]:
        return self._days.day_of(np.asarray(at_us, np.int64))

    def _add_months(self, day: int, months: int) -> int:
        return int(self._days.add_months(day, months))

    def _start_of(self, day: int) -> int:
        return int(self._days.start_of(day))


async def _followed(
    conn: Connection,
    days: _Days,
    tariffs: Tariffs,
    start: datetime,
    end: datetime,
    programme: str | None,
) -> list[_Patient]:
    rows = await conn.fetch(
        """
        SELECT patient_key, patient_id, programme,
               (extract(epoch FROM enrolled_at) * 1e6)::bigint AS enrolled_us,
               (extract(epoch FROM discharged_at) * 1e6)::bigint AS discharged_us,
               (extract(epoch FROM prescribed_until) * 1e6)::bigint AS prescribed_until_us
        FROM patients
        WHERE enrolled_at < $2 AND (discharged_at IS NULL OR discharged_at > $1)
          AND ($3::text IS NULL OR programme = $3)
        ORDER BY patient_id
        """,
        start,
        end,
        programme,
    )
    patients = []
    start_days = days.day_of([r["enrolled_us"] for r in rows]).tolist()
    programmes = {p.value: p for p in Programme}  # an Enum's call costs a microsecond
    for r, start_day in zip(rows, start_days, strict=True):
        discharged = r["discharged_us"]
        prescribed = r["prescribed_until_us"] or int(
            days.start_of(days.add_months(start_day, tariffs.billing.prescription_months))
        )
        follow_up = FollowUp(
            r["patient_key"], programmes[r["programme"]], r["enrolled_us"], discharged
        )
        patients.append(
            _Patient(
                r["patient_key"],
                r["patient_id"],
                follow_up,
                start_day,
                # The last day followed: the one the discharge's last moment before falls in.
                None if discharged is None else int(days.day_of(discharged - 1)),
                prescribed,
                (days.add_months(start_day, 1), days.add_months(start_day, 2)),
            )
        )
    return patients


def _whole_months(days: _Days, start_us: int, end_us: int) -> list[date]:
    """The local calendar months that lie wholly in [start, end)."""
    first = days.date_of(int(days.day_of(start_us)))
    if int(days.start_of(days.day_of_date(first))) < start_us:
        first = days.date_of(days.day_of_date(first) + 1)
    month = first.replace(day=1) if first.day == 1 else _next_month(first)
    months = []
    while int(days.start_of(days.day_of_date(_next_month(month)))) <= end_us:
        months.append(month)
        month = _next_month(month)
    return months


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _due_checks(
    days: _Days, patients: Sequence[_Patient], until_us: int
) -> list[tuple[_Patient, int]]:
    """Months 1 and 2 of every patient's follow-up that ended by `until_us`."""
    return [
        (p, n)
        for p in patients
        for n in (1, 2)
        if int(days.start_of(p.check_day(n))) <= until_us
        and (p.last_day is None or p.last_day >= p.check_day(n))
    ]


async def _stored_checks(
    conn: Connection, patients: Sequence[_Patient], due: Sequence[tuple[_Patient, int]]
) -> dict[tuple[int, int], MonthCheck]:
    """The checks of `due` that ingest made and stored."""
    wanted = {(p.key, n) for p, n in due}
    return {
        (c.patient_key, c.month): c
        for c in await stored_checks(conn, [p.key for p in patients])
        if (c.patient_key, c.month) in wanted
    }


def _as_lists(
    data: Mapping[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
) -> dict[str, tuple[list[int], list[int]]]:
    """Per measure, expected and received per window as lists: read a million times one
    element at a time, numpy's element access costs more than the rest of the row."""
    return {
        name: (expected.tolist(), received.tolist()) for name, (expected, received) in data.items()
    }


def _data(
    config: AlertConfig,
    patient: _Patient,
    data: Mapping[str, tuple[list[int], list[int]]],
    window: int,
) -> dict[str, tuple[int, int]]:
    return {
        measure: (data[measure][0][window], data[measure][1][window])
        for measure in config.programmes[patient.follow_up.programme].measures
    }


def _last_followed(days: _Days, patient: _Patient, month: date) -> date | None:
    last_of_month = int(days.add_months(days.day_of_date(month), 1)) - 1
    if patient.last_day is None or patient.last_day > last_of_month:
        return None
    return days.date_of(patient.last_day)


def _reasons(
    days: _Days,
    tariffs: Tariffs,
    patient: _Patient,
    month: date,
    checks: Mapping[tuple[int, int], MonthCheck],
) -> list[Reason]:
    first = days.day_of_date(month)
    after = int(days.add_months(first, 1))
    reasons = []
    if not tariffs.programmes[patient.follow_up.programme].billable:
        reasons.append(Reason.NOT_BILLABLE)
    if tariffs.billing.whole_months_only:
        if patient.start_day > first:
            reasons.append(Reason.ENROLLED_DURING_MONTH)
        if patient.last_day is not None and patient.last_day < after:
            reasons.append(Reason.DISCHARGED_DURING_MONTH)
    if patient.prescription_ends_us < int(days.start_of(after)):
        reasons.append(Reason.PRESCRIPTION_ENDED)
    for number, reason in ((1, Reason.ADHERENCE_M1_FAILED), (2, Reason.ADHERENCE_M2_FAILED)):
        check = checks.get((patient.key, number))
        judged_before = patient.check_day(number) <= first
        if check and judged_before and check.failed(tariffs.billing.adherence_more_than_percent):
            reasons.append(reason)
    return reasons


def _active_file(
    days: _Days, tariffs: Tariffs, patients: Sequence[_Patient], months: Sequence[date]
) -> dict[tuple[date, Programme], ActiveFile]:
    """Per month and programme, the mean number of patients followed on a day of the month
    (a patient counts on each day from their enrolment's to their discharge's)."""
    followed: dict[tuple[date, Programme], int] = defaultdict(int)
    for month in months:
        first = days.day_of_date(month)
        after = int(days.add_months(first, 1))
        for p in patients:
            last = after - 1 if p.last_day is None else min(p.last_day, after - 1)
            followed[month, p.follow_up.programme] += max(0, last - max(first, p.start_day) + 1)
    found = {}
    for month in months:
        length = int(days.add_months(days.day_of_date(month), 1)) - days.day_of_date(month)
        for programme in Programme:
            mean = followed.get((month, programme), 0) / length
            tier, share = tariffs.tier(mean)
            found[month, programme] = ActiveFile(mean, tier, share)
    return found
