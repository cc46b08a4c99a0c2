"""The evidence report on a simulated 60 days whose figures are known in advance: five
patients with designed transmission patterns, one discharged, one enrolled late; one
duplicate and one malformed message; the report must give exactly the designed figures."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.actions import acknowledge, resolve
from alerts.messages import words
from alerts.model import Disposition
from ingest.report.documents import FAILING_SHOWN, ReportPage
from tests.records import message, reading
from tests.support import Stack, run_cli

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = TODAY - timedelta(days=59)  # days 0..59, day 59 is today
END = START + timedelta(days=60)

# patient -> (enrolled on day, discharged on day or None, days with a transmission)
DESIGN: dict[str, tuple[int, int | None, list[int]]] = {
    "p-every-day": (0, None, list(range(60))),
    "p-every-3rd": (0, None, list(range(0, 60, 3))),
    "p-first-20": (0, None, list(range(20))),
    "p-late": (45, None, list(range(45, 60))),
    "p-discharged": (0, 10, list(range(10))),
}


def at(day: int, minutes: int = 0) -> str:
    return (START + timedelta(days=day, minutes=minutes)).isoformat()


def body(patient: str, day: int, spo2: float = 97, minutes: int = 0) -> bytes:
    measured = at(day, minutes)
    payload = message(reading("spo2", spo2, "%", measured), patient=patient, device=f"d-{patient}")
    return json.dumps(payload).encode()


async def test_report_gives_the_designed_figures(stack: Stack, tmp_path: Path) -> None:
    await stack.enroll([(p, f"d-{p}") for p in DESIGN])
    async with stack.connection() as conn:
        for patient, (enrolled, discharged, _) in DESIGN.items():
            await conn.execute(
                "UPDATE patients SET enrolled_at = $2, discharged_at = $3 WHERE patient_id = $1",
                patient,
                START + timedelta(days=enrolled),
                None if discharged is None else START + timedelta(days=discharged),
            )
    messages = [(p.encode(), body(p, day)) for p, (_, _, days) in DESIGN.items() for day in days]
    messages.append(messages[0])  # a gateway's re-send: a duplicate
    messages.append((b"p-every-day", b"{not json"))  # a dead letter
    messages.append((b"p-every-day", body("p-every-day", 59, spo2=88, minutes=1)))
    # A current low reading (whatever the hour): a red clinical episode, a NEWS2 score.
    now = datetime.now(UTC) - timedelta(minutes=2)
    low = message(
        reading("spo2", 88, "%", now.isoformat()), patient="p-every-day", device="d-p-every-day"
    )
    messages.append((b"p-every-day", json.dumps(low).encode()))
    async with stack.ingest():
        await stack.produce(messages)
        await stack.wait_drained(60)
    async with stack.connection() as conn:
        findings = await conn.fetch("SELECT rule_id, severity FROM findings")
        episodes = await conn.fetch("SELECT episode_id, job, severity FROM episodes")
        clinical = next(e for e in episodes if e["job"] == "clinical")
        await acknowledge(conn, clinical["episode_id"], "dr-a")
        await resolve(conn, clinical["episode_id"], "dr-a", Disposition.ADVICE_GIVEN, None)
        # NEWS2: what the pipeline scored, plus designed counts, one day of them outside the
        # period, some for another programme.
        rows = await conn.fetch(
            "SELECT score, sum(sets)::bigint AS n FROM alert_scores GROUP BY score"
        )
        scored: dict[int, int] = {r["score"]: r["n"] for r in rows}
        designed_news2 = [
            (59, "covid", 5, 4),
            (30, "covid", 7, 1),
            (0, "covid", 0, 10),
            (60, "covid", 9, 100),
            (30, "heart_failure", 6, 1000),
        ]
        for day, programme, score, sets in designed_news2:
            await conn.execute(
                "INSERT INTO alert_scores VALUES ('news2', 99, $1, $2, $3, $4)",
                (START + timedelta(days=day)).date(),
                programme,
                score,
                sets,
            )

    out = tmp_path / "report"
    printed = await run_cli(
        stack, "report", "--from", START.isoformat(), "--to", END.isoformat(), "--out", str(out)
    )
    text = (out / "report.json").read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert digest in printed
    report = json.loads(text)

    # Active file: 60 + 60 + 60 + 15 + 10 patient-days over the 60 days.
    assert report["active_file"] == {
        "covid": {
            "active": 5,
            "enrolled": 5,
            "discharged": 1,
            "patient_days": 205.0,
            "mean_active_file": round(205 / 60, 2),
        }
    }

    # Months 1 and 2 of follow-up that ended in the period, checked against the COVID-19
    # protocol (SpO2 twice a day): one reading a day is half of it, not more: failed.
    checks = report["reimbursement"]["adherence_checks"]
    assert checks["month_1"]["checked"] == 3  # p-every-day, p-every-3rd, p-first-20
    failed = {f["patient_id"] for f in checks["month_1"]["failed"]}
    assert failed == {"p-every-day", "p-every-3rd", "p-first-20"}

    # Findings and episodes per 100 patient-days, from the raw rows.
    labels = {1: "info", 2: "orange", 3: "red"}
    counted: dict[str, dict[str, int]] = {}
    for f in findings:
        per_rule = counted.setdefault(f["rule_id"], {})
        per_rule[labels[f["severity"]]] = per_rule.get(labels[f["severity"]], 0) + 1
    assert report["alerts"]["findings_per_100_patient_days"] == {
        rule: {s: round(n * 100 / 205, 3) for s, n in sorted(c.items())}
        for rule, c in sorted(counted.items())
    }
    opened: dict[str, dict[str, int]] = {}
    for e in episodes:
        per_job = opened.setdefault(e["job"], {})
        per_job[labels[e["severity"]]] = per_job.get(labels[e["severity"]], 0) + 1
    assert report["alerts"]["episodes_per_100_patient_days"] == {
        job: {s: round(n * 100 / 205, 3) for s, n in sorted(c.items())}
        for job, c in sorted(opened.items())
    }
    assert report["alerts"]["episodes_opened"] == len(episodes)
    red = report["alerts"]["handling_seconds"]["red"]
    assert (red["acknowledge"]["count"], red["resolve"]["count"]) == (1, 1)
    reds = sum(e["severity"] == 3 for e in episodes)
    assert red["acknowledged_within_target"] == round(1 / reds, 4)
    # The clinician judged the red episode worth an action: advice given.
    assert report["alerts"]["dispositions"]["advice_given"] == 1
    assert report["alerts"]["clinical_action"]["by_programme"] == {
        "covid": {"episodes": 1, "with_clinical_action": 1, "share": 1.0}
    }
    assert report["alerts"]["clinical_action"]["by_rule"]["spo2_scale1"]["share"] == 1.0

    # The platform: every offset accounted for, the duplicate and the dead letter counted.
    technical = report["technical"]
    assert technical["duplicates"] == 1
    assert technical["rejected_by_reason"] == {"invalid_json": 1}
    reconciliation = technical["reconciliation"]
    assert sum(p["offsets_consumed"] for p in reconciliation) == len(messages)
    assert all(p["unaccounted_offsets"] == 0 for p in reconciliation)
    assert sum(p["readings_stored"] for p in reconciliation) == len(messages) - 2
    assert technical["latency_s"]["device_to_durable"]["p99"] > 0

    # NEWS2: every scored set of the period's days, of every programme (none given).
    for day, _, score, sets in designed_news2:
        if day < 60:
            scored[score] = scored.get(score, 0) + sets
    total = sum(scored.values())
    assert report["alerts"]["news2"] == {
        "scored_sets": total,
        "by_score": {str(score): n for score, n in sorted(scored.items())},
        "share_5_or_more": round((4 + 1 + 1000) / total, 4),
        "share_7_or_more": round(1 / total, 4),
    }

    page = (out / "report.html").read_text()
    assert digest in page
    assert page.count("<img") == 4  # active file, adherence checks, findings, NEWS2
    assert "<html lang=fr>" in page  # French by default
    reconciliation = page.split("Rapprochement sans perte")[1].split("</table>")[0]
    assert 'class="red"' not in reconciliation  # nothing lost
    figures_csv = (out / "report.csv").read_text()
    assert "figure,value" in figures_csv
    assert "\nreimbursement.adherence_checks.month_1.failed,3\n" in figures_csv  # counted
    assert report["produced_by"]["configuration"]["alert_programmes_sha256"]


@pytest.mark.parametrize(("unaccounted", "red"), [(0, False), (3, True)])
def test_a_loss_shows_in_red(unaccounted: int, red: bool) -> None:
    table = ReportPage({}, "", words("en")).table(
        [{"partition": 0, "unaccounted_offsets": unaccounted}], red="unaccounted_offsets"
    )
    assert ('class="red"' in table) is red


def test_the_page_names_the_first_failing_patients_and_counts_the_others() -> None:
    failed = [
        {
            "patient_id": f"p{n:04}",
            "programme": "covid",
            "measures": {"spo2": {"expected": 60, "received": 1}},
        }
        for n in range(FAILING_SHOWN + 7)
    ]
    checks = {
        "month_1": {"checked": len(failed), "passed": 0, "failed": failed},
        "month_2": {"checked": 0, "passed": 0, "failed": []},
    }
    document = {"reimbursement": {"more_than_percent": 50.0, "adherence_checks": checks}}
    section = ReportPage(document, "", words("en"))._checks()
    named = [f"<td>p{n:04}</td>" in section for n in (0, FAILING_SHOWN - 1, FAILING_SHOWN)]
    assert named == [True, True, False]
    assert "… and 7 more: the check column of follow_up.csv gives every check." in section
