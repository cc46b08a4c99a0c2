"""Reimbursement evidence over designed patients: each sends what its design says through
the real pipeline, a clinician prescribes another frequency, an operator discharges one;
the report's expected and received data, its checks of months 1 and 2 and its monthly
eligibility are exactly those computed here from the design (docs/reimbursement.md).

The period is in the past (September and October 2026), so nothing depends on the day or
the hour the test runs at.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

from alerts.protocol import Prescription
from devices.registry import DeviceType, Enrollment, Programme, enroll
from tests.records import message, reading
from tests.reference_protocol import PARIS, reference_count
from tests.support import Stack, run_cli, run_cli_refused

START, END = date(2026, 9, 1), date(2026, 11, 1)
MONTHS = (date(2026, 9, 1), date(2026, 10, 1))
OPERATOR_EUR, EXPLOITANT_EUR = 28.0, 50.0  # ingest/report/tariffs.toml


@dataclass
class Design:
    programme: Programme
    enrolled: date  # at 08:00 local
    # measure -> (kind, unit, value, local hours of the day it is sent at, days of follow-up)
    sends: dict[str, tuple[list[tuple[str, str, float]], list[float], list[int]]]
    protocol: dict[str, Prescription]
    prescribed: dict[str, tuple[int, Prescription]] = field(default_factory=dict)
    discharged: datetime | None = None


def daily(first: int, last: int, step: int = 1) -> list[int]:
    return list(range(first, last + 1, step))


WEIGHT = [("body_weight", "kg", 71.0)]
DESIGNS = {
    # Diabetes: a glucose a week, what the arrêté asks for.
    "dia-weekly": Design(
        Programme.DIABETES,
        date(2026, 9, 1),
        {"glucose": ([("glucose", "mg/dL", 110.0)], [9.0], daily(2, 60, 7))},
        {"glucose": Prescription(0, 7, 1, 24.0)},
    ),
    # Heart failure, weighed every day.
    "hf-daily": Design(
        Programme.HEART_FAILURE,
        date(2026, 9, 1),
        {"weight": (WEIGHT, [9.0], daily(0, 60))},
        {"weight": Prescription(0, 1, 1, 12.0)},
    ),
    # Weighed on 12 of the first 30 days, then every day: month 1 fails.
    "hf-sparse": Design(
        Programme.HEART_FAILURE,
        date(2026, 9, 1),
        {"weight": (WEIGHT, [9.0], daily(0, 11) + daily(30, 60))},
        {"weight": Prescription(0, 1, 1, 12.0)},
    ),
    # Every day, then every other day from 15 September, as the cardiologist prescribed.
    "hf-prescribed": Design(
        Programme.HEART_FAILURE,
        date(2026, 9, 1),
        {"weight": (WEIGHT, [9.0], daily(0, 13) + daily(14, 60, 2))},
        {"weight": Prescription(0, 1, 1, 12.0)},
        prescribed={"weight": (14, Prescription(14, 2, 1, 12.0))},
    ),
    # Every day until the discharge, on 20 October at 14:00.
    "hf-discharged": Design(
        Programme.HEART_FAILURE,
        date(2026, 9, 1),
        {"weight": (WEIGHT, [9.0], daily(0, 49))},
        {"weight": Prescription(0, 1, 1, 12.0)},
        discharged=datetime(2026, 10, 20, 14, 0, tzinfo=PARIS),
    ),
    # Enrolled mid-month: the ventilator's data and the SpO2 every day.
    "resp-mid": Design(
        Programme.RESPIRATORY,
        date(2026, 9, 15),
        {
            "ventilation": (
                [("ventilator_usage", "h", 7.0), ("ventilator_leak", "L/min", 10.0)],
                [8.5],
                daily(0, 46),
            ),
            "spo2": ([("spo2", "%", 95.0)], [20.0], daily(0, 46)),
        },
        {
            "ventilation": Prescription(0, 1, 1, 24.0),
            "spo2": Prescription(0, 1, 1, 24.0),
        },
    ),
    # COVID-19 follow-up (not an activity of the LATM list): the SpO2 twice a day as
    # prescribed, the questionnaire once of the two: half of it, not more.
    "covid-1": Design(
        Programme.COVID,
        date(2026, 9, 1),
        {
            "spo2": ([("spo2", "%", 97.0)], [8.5, 20.0], daily(0, 60)),
            "questionnaire": ([("dyspnoea", "{grade}", 0.0)], [9.0], daily(0, 60)),
        },
        {"spo2": Prescription(0, 1, 2, 24.0), "questionnaire": Prescription(0, 1, 2, 24.0)},
    ),
}
DEVICES = {
    "glucose": DeviceType.GLUCOMETER,
    "weight": DeviceType.SCALE,
    "ventilation": DeviceType.VENTILATOR,
    "spo2": DeviceType.PULSE_OXIMETER,
    "questionnaire": DeviceType.QUESTIONNAIRE_APP,
}


def enrolled_at(design: Design) -> datetime:
    return datetime.combine(design.enrolled, datetime.min.time(), PARIS) + timedelta(hours=8)


def midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), PARIS)


def add_months(day: date, months: int) -> date:
    year, month = divmod(day.month - 1 + months, 12)
    first = date(day.year + year, month + 1, 1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first.replace(day=min(day.day, (following - first).days))


def counted(patient: str, measure: str, first: date, end: date) -> tuple[int, int]:
    """Expected and received of a measure over [first, end), from the design."""
    design = DESIGNS[patient]
    timeline = [design.protocol[measure]]
    if measure in design.prescribed:
        timeline.append(design.prescribed[measure][1])
    _, _, days = design.sends[measure]
    points = {design.enrolled + timedelta(days=d): 0 for d in days}
    for d in days:
        points[design.enrolled + timedelta(days=d)] += len(design.sends[measure][1])
    due_by = min(midnight(end), midnight(END), design.discharged or midnight(END))
    return reference_count(
        design.enrolled, first, end, enrolled_at(design), due_by, timeline, points
    )


def check(patient: str, number: int) -> dict[str, tuple[int, int]] | None:
    """Month `number` of follow-up, if it ended before the discharge and the period's end."""
    design = DESIGNS[patient]
    first = add_months(design.enrolled, number - 1)
    end = add_months(design.enrolled, number)
    if midnight(end) > midnight(END) or (design.discharged and design.discharged < midnight(end)):
        return None
    return {m: counted(patient, m, first, end) for m in design.protocol}


def failed(data: dict[str, tuple[int, int]]) -> list[str]:
    return [m for m, (e, r) in data.items() if e and r * 100 <= 50 * e]


def verdict(data: dict[str, tuple[int, int]] | None) -> str:
    if data is None:
        return ""
    return "failed:" + "+".join(failed(data)) if failed(data) else "passed"


def designed_usage(patient: str, month: date) -> dict[str, str]:
    design = DESIGNS[patient]
    after = add_months(month, 1)
    reasons = []
    if design.programme is Programme.COVID:
        reasons.append("not_billable")
    if design.enrolled > month:
        reasons.append("enrolled_during_month")
    if design.discharged and design.discharged < midnight(after):
        reasons.append("discharged_during_month")
    m1_check = m2_check = ""
    for number in (1, 2):
        judged = add_months(design.enrolled, number)
        data = check(patient, number)
        if judged <= month and data is not None:
            if number == 1:
                m1_check = verdict(data)
            else:
                m2_check = verdict(data)
            if failed(data):
                reasons.append(f"adherence_m{number}_failed")
    row = {
        "patient_id": patient,
        "ins": "",
        "programme": design.programme.value,
        "month": f"{month:%Y-%m}",
        "followed_from": max(design.enrolled, month).isoformat(),
        "followed_to": design.discharged.date().isoformat()
        if design.discharged and design.discharged < midnight(after)
        else "",
        "m1_check": m1_check,
        "m2_check": m2_check,
        "eligible": "no" if reasons else "yes",
        "reasons": ";".join(reasons),
        "operator_eur": f"{0 if reasons else OPERATOR_EUR:.2f}",
        "exploitant_eur": f"{0 if reasons else EXPLOITANT_EUR:.2f}",
    }
    for measure in ("weight", "glucose", "spo2", "ventilation", "questionnaire"):
        if measure in design.protocol:
            expected, received = counted(patient, measure, month, after)
            row |= {f"{measure}_expected": str(expected), f"{measure}_received": str(received)}
        else:
            row |= {f"{measure}_expected": "", f"{measure}_received": ""}
    return row


def messages() -> list[tuple[bytes, bytes]]:
    sent = []
    for patient, design in DESIGNS.items():
        for measure, (readings, hours, days) in design.sends.items():
            for day in days:
                for hour in hours:
                    at = midnight(design.enrolled + timedelta(days=day)) + timedelta(hours=hour)
                    body = message(
                        *(reading(k, v, u, at.isoformat()) for k, u, v in readings),
                        patient=patient,
                        device=f"{patient}-{measure}",
                    )
                    sent.append((patient.encode(), json.dumps(body).encode()))
    return sent


class Tables(HTMLParser):
    """Each table's rows, as the number of cells of each."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[int]] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append(0)
        elif tag in ("td", "th"):
            self.tables[-1][-1] += 1


async def test_reimbursement_follows_the_designed_patients(stack: Stack, tmp_path: Path) -> None:
    async with stack.connection() as conn:
        await enroll(
            conn,
            [
                Enrollment(
                    patient_id=patient,
                    programme=design.programme,
                    device_id=f"{patient}-{measure}",
                    device_type=DEVICES[measure],
                )
                for patient, design in DESIGNS.items()
                for measure in design.sends
            ],
        )
        for patient, design in DESIGNS.items():
            await conn.execute(
                "UPDATE patients SET enrolled_at = $2 WHERE patient_id = $1",
                patient,
                enrolled_at(design),
            )
        await conn.execute(
            """
            INSERT INTO patient_identities (patient_key, status, birth_family_name, first_names,
                                            birth_date, sex, ins_matricule, ins_oid)
            SELECT patient_key, 'qualified', 'MARTIN', 'Jeanne', '1950-03-02', 'F',
                   '250037512345694', '1.2.250.1.213.1.4.8'
            FROM patients WHERE patient_id = 'hf-daily'
            """
        )
    async with stack.ingest():
        await stack.produce(messages())
        await stack.wait_drained(120)

    # The cardiologist prescribes weight every other day, from 15 September.
    await run_cli(
        stack, "patients", "prescribe", "hf-prescribed", "weight", "--every-days", "2",
        "--by", "dr-cardio", "--note", "stable: every other day",
    )  # fmt: skip
    async with stack.connection() as conn:
        await conn.execute(
            "UPDATE threshold_override_history SET changed_at = $1 WHERE changed_by = 'dr-cardio'",
            datetime(2026, 9, 15, 10, 0, tzinfo=PARIS),
        )
    discharged = DESIGNS["hf-discharged"].discharged
    assert discharged is not None
    await run_cli(
        stack, "patients", "discharge", "hf-discharged", "--at", discharged.isoformat(),
        "--by", "operator",
    )  # fmt: skip

    out = tmp_path / "report"
    await run_cli(
        stack, "report", "--from", "2026-09-01", "--to", "2026-11-01", "--out", str(out),
        "--with-identity",
    )  # fmt: skip

    # The usage-control extract: a row per patient and month, exactly as designed; the INS
    # of the one patient who has one (read with the identity right, and audited).
    with (out / "usage.csv").open(encoding="utf-8") as f:
        usage = {(r["patient_id"], r["month"]): r for r in csv.DictReader(f)}
    designed = {
        (patient, f"{month:%Y-%m}"): designed_usage(patient, month)
        for patient, design in DESIGNS.items()
        for month in MONTHS
        if design.enrolled < add_months(month, 1)
    }
    designed["hf-daily", "2026-09"]["ins"] = designed["hf-daily", "2026-10"]["ins"] = (
        "250037512345694"
    )
    assert usage == designed
    async with stack.connection() as conn:
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE subtype = 'identity.read' "
            "AND patient_id = 'hf-daily'"
        )
    assert audited == 1

    # The design is what we think it is.
    assert designed["dia-weekly", "2026-09"]["glucose_expected"] == "4"
    assert designed["dia-weekly", "2026-10"]["eligible"] == "yes"
    assert designed["hf-sparse", "2026-10"]["reasons"] == "adherence_m1_failed"
    assert designed["hf-sparse", "2026-09"]["eligible"] == "yes"
    assert designed["hf-prescribed", "2026-09"]["weight_expected"] == "22"  # 14 + 8
    assert designed["hf-discharged", "2026-10"]["reasons"] == "discharged_during_month"
    assert designed["resp-mid", "2026-09"]["reasons"] == "enrolled_during_month"
    assert designed["resp-mid", "2026-10"]["eligible"] == "yes"

    # Months of follow-up that ended in the period, with the checks of months 1 and 2.
    with (out / "follow_up.csv").open(encoding="utf-8") as f:
        months = {(r["patient_id"], int(r["month_of_follow_up"])): r for r in csv.DictReader(f)}
    for (patient, number), row in months.items():
        design = DESIGNS[patient]
        first, end = add_months(design.enrolled, number - 1), add_months(design.enrolled, number)
        data = {m: counted(patient, m, first, end) for m in design.protocol}
        for measure, (expected, received) in data.items():
            assert (row[f"{measure}_expected"], row[f"{measure}_received"]) == (
                str(expected),
                str(received),
            ), (patient, number, measure)
        assert row["check"] == (verdict(check(patient, number)) if number <= 2 else "")
    assert set(months) == {
        (patient, number)
        for patient, design in DESIGNS.items()
        for number in (1, 2)
        if add_months(design.enrolled, number) <= END
    }
    report = json.loads((out / "report.json").read_text())
    month_1 = report["reimbursement"]["adherence_checks"]["month_1"]
    designed_failures = {}
    for patient in DESIGNS:
        month_1_data = check(patient, 1)
        if month_1_data is not None and failed(month_1_data):
            designed_failures[patient] = failed(month_1_data)
    assert designed_failures == {"hf-sparse": ["weight"], "covid-1": ["questionnaire"]}
    assert {f["patient_id"]: list(f["measures"]) for f in month_1["failed"]} == designed_failures
    october = report["reimbursement"]["calendar_months"][1]
    assert october["month"] == "2026-10"
    heart_failure = october["programmes"]["heart_failure"]
    assert heart_failure["eligible"] == 2  # hf-daily, hf-prescribed
    assert heart_failure["operator_eur"] == 2 * OPERATOR_EUR
    assert heart_failure["not_eligible_by_reason"] == {
        "adherence_m1_failed": 1,
        "discharged_during_month": 1,
    }

    # The page, in French by default: every table's header names every cell of its rows.
    page = (out / "report.html").read_text()
    assert "<html lang=fr>" in page
    assert "Prise en charge, par mois civil" in page
    tables = Tables()
    tables.feed(page)
    assert len(tables.tables) >= 4  # active file, reimbursement, checks, failures
    for rows in tables.tables:
        assert len(set(rows)) == 1, rows


async def test_bad_requests_get_a_clear_error(stack: Stack) -> None:
    """No traceback, nothing changed: out-of-range prescriptions, an unknown measure, a
    discharge of nobody, a period that ends before it starts."""
    await stack.enroll([("p-covid", "oxi-covid")])
    refusals = [
        (("override", "--patient", "p-covid", "--parameter", "spo2_missing.every_days",
          "--value", "1e8", "--by", "dr-a"), 2, "outside 1-7"),
        (("override", "--patient", "p-covid", "--parameter", "spo2_missing.every_days",
          "--value", "nan", "--by", "dr-a"), 2, "not a number"),
        (("override", "--patient", "p-covid", "--parameter", "spo2_missing.enabled",
          "--value", "0", "--by", "dr-a"), 2, "cannot be disabled"),
        (("patients", "prescribe", "p-covid", "weight", "--every-days", "2", "--by", "dr-a"),
         1, "hf_weight_missing is not run for covid patients"),
        (("patients", "prescribe", "p-covid", "steps", "--every-days", "2", "--by", "dr-a"),
         1, "unknown measure 'steps'"),
        (("patients", "prescribe", "p-covid", "spo2", "--times", "9", "--by", "dr-a"),
         2, "outside 1-4"),
        (("patients", "discharge", "p-nobody", "--by", "op"), 1, "unknown patient 'p-nobody'"),
        (("patients", "renew", "p-covid", "--until", "2099-01-01", "--by", "op"),
         1, "at most a year"),
        (("report", "--from", "2026-10-01", "--to", "2026-09-01"), 1, "must be after --from"),
    ]  # fmt: skip
    for args, code, text in refusals:
        returncode, output = await run_cli_refused(stack, *args)
        assert (returncode, text in output) == (code, True), output
    async with stack.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM threshold_overrides") == 0
