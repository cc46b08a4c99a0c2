"""The usage-control extract and the months of follow-up, as CSV (docs/reimbursement.md
says each field): what the arrêtés ask a device to extract to check its actual use.

usage.csv has a row per patient and calendar month of the period; follow_up.csv a row
per patient and month of follow-up that ended in it. Patients are named by their
pseudonymous id; the INS matricule is given only when the reader has the identity right
(`telemon report --with-identity`, each read audited).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
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
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, USAGE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    "patient_id": row.patient_id,
                    "ins": (ins or {}).get(row.patient_id, ""),
                    "programme": row.programme.value,
                    "month": f"{row.month:%Y-%m}",
                    "followed_from": row.followed_from.isoformat(),
                    "followed_to": row.followed_to.isoformat() if row.followed_to else "",
                    **_data(row.data),
                    "m1_check": _verdict(row.checks.get(1), more_than_percent),
                    "m2_check": _verdict(row.checks.get(2), more_than_percent),
                    "eligible": "yes" if row.eligible else "no",
                    "reasons": ";".join(r.value for r in row.reasons),
                    "operator_eur": f"{row.operator_eur:.2f}",
                    "exploitant_eur": f"{row.exploitant_eur:.2f}",
                }
            )


def write_follow_up(path: Path, months: Sequence[FollowUpMonth], more_than_percent: float) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, FOLLOW_UP_COLUMNS)
        writer.writeheader()
        for month in months:
            writer.writerow(
                {
                    "patient_id": month.patient_id,
                    "programme": month.programme.value,
                    "month_of_follow_up": month.number,
                    "first_day": month.first.isoformat(),
                    "last_day": month.last.isoformat(),
                    **_data(month.data),
                    "check": _verdict(month.check, more_than_percent),
                }
            )


def _data(data: Mapping[str, tuple[int, int]]) -> dict[str, str]:
    """Expected and received of each measure; empty for measures not prescribed."""
    cells = dict.fromkeys(_DATA_COLUMNS, "")
    for measure, (expected, received) in data.items():
        cells[f"{measure}_expected"] = str(expected)
        cells[f"{measure}_received"] = str(received)
    return cells


def _verdict(check: MonthCheck | None, more_than_percent: float) -> str:
    """ "passed", "failed:<measures>", or empty when not judged yet."""
    if check is None:
        return ""
    failed = check.failed(more_than_percent)
    return "failed:" + "+".join(failed) if failed else "passed"
