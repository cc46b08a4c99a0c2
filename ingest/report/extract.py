"""The usage-control extract and the months of follow-up, as CSV (docs/reimbursement.md
says each field): what the arrêtés ask a device to extract to check its actual use.

usage.csv has a row per patient and calendar month of the period; follow_up.csv a row
per patient and month of follow-up that ended in it. Patients are named by their
pseudonymous id; the INS matricule is given only when the reader has the identity right
(`telemon report --with-identity`, each read audited).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path

from alerts.adherence import MonthCheck
from alerts.protocol import MEASURES
from ingest.report.reimbursement import FollowUpMonth, PatientMonth

__all__ = ["USAGE_COLUMNS", "write_follow_up", "write_usage"]

_DATA_COLUMNS = [f"{m}_{what}" for m in MEASURES for what in ("expected", "received")]
USAGE_COLUMNS = [
    "patient_id",
    "ins",
    "programme",
    "month",
    "followed_from",
    "followed_to",
    *_DATA_COLUMNS,
    "m1_check",
    "m2_check",
    "eligible",
    "reasons",
    "operator_eur",
    "exploitant_eur",
]
FOLLOW_UP_COLUMNS = [
    "patient_id",
    "programme",
    "month_of_follow_up",
    "first_day",
    "last_day",
    *_DATA_COLUMNS,
    "check",
]


def write_usage(
    path: Path,
    rows: Sequence[PatientMonth],
    more_than_percent: float,
    ins: Mapping[str, str] | None,
) -> None:
    """`ins`: patient id -> INS matricule, for a reader with the identity right (None: the
    column stays empty)."""
    named = ins or {}
    iso, month_of = _date_texts()
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(USAGE_COLUMNS)
        # Each row a list in the columns' order: a million rows, no dict each.
        writer.writerows(
            [
                row.patient_id,
                named.get(row.patient_id, ""),
                row.programme.value,
                month_of(row.month),
                iso(row.followed_from),
                iso(row.followed_to) if row.followed_to else "",
                *_data(row.data),
                _verdict(row.checks.get(1), more_than_percent),
                _verdict(row.checks.get(2), more_than_percent),
                "yes" if row.eligible else "no",
                ";".join(r.value for r in row.reasons),
                f"{row.operator_eur:.2f}",
                f"{row.exploitant_eur:.2f}",
            ]
            for row in rows
        )


def write_follow_up(path: Path, months: Sequence[FollowUpMonth], more_than_percent: float) -> None:
    iso, _ = _date_texts()
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(FOLLOW_UP_COLUMNS)
        writer.writerows(
            [
                month.patient_id,
                month.programme.value,
                month.number,
                iso(month.first),
                iso(month.last),
                *_data(month.data),
                _verdict(month.check, more_than_percent),
            ]
            for month in months
        )


def _date_texts() -> tuple[Callable[[date], str], Callable[[date], str]]:
    """A day as YYYY-MM-DD and a month as YYYY-MM, each formatted once: a million rows
    name the same few hundred days."""
    return functools.cache(date.isoformat), functools.cache(lambda d: f"{d:%Y-%m}")


def _data(data: Mapping[str, tuple[int, int]]) -> list[str]:
    """Expected and received of each measure, in the columns' order; empty for measures
    not prescribed."""
    cells: list[str] = []
    for measure in MEASURES:
        counted = data.get(measure)
        cells += ("", "") if counted is None else (str(counted[0]), str(counted[1]))
    return cells


def _verdict(check: MonthCheck | None, more_than_percent: float) -> str:
    """ "passed", "failed:<measures>", or empty when not judged yet."""
    if check is None:
        return ""
    failed = check.failed(more_than_percent)
    return "failed:" + "+".join(failed) if failed else "passed"
