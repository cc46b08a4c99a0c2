"""The evidence report's figures, from PostgreSQL, for any past period.

What the operator of a telemonitoring programme shows the payer (droit commun,
PECAN) and the ANS (docs/clinical.md §4): the active file, the reimbursement
evidence (expected and received data, the adherence checks, monthly eligibility:
ingest.report.reimbursement, in the programmes' local days), alerts and how fast they
were handled, NEWS2 scores, and the platform's own figures, down to a per-partition
zero-loss reconciliation (UTC days).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alerts.model import Disposition, Job, Severity
from alerts.programmes import AlertConfig
from ingest.platform import Connection
from ingest.report.reimbursement import Reimbursement, Tariffs, reimbursement

__all__ = ["ACK_TARGET_S", "Period", "gather_figures"]

# Acknowledged within: red 15 minutes, orange 4 hours, info 24 hours (the programme's
# service levels; defaults, as docs/clinical.md says of unverified thresholds).
ACK_TARGET_S = {"red": 15 * 60, "orange": 4 * 3600, "info": 24 * 3600}


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    programme: str | None = None


async def gather_figures(
    conn: Connection, period: Period, config: AlertConfig, tariffs: Tariffs, now_us: int
) -> tuple[dict[str, Any], Reimbursement]:
    """The report's figures, and the reimbursement evidence behind its extracts."""
    args = (period.start, period.end, period.programme)
    evidence = await reimbursement(
        conn, config, tariffs, period.start, period.end, period.programme, now_us
    )
    figures = {
        "period": {
            "from": period.start.isoformat(),
            "to": period.end.isoformat(),
            "programme": period.programme,
        },
        "active_file": await _active_file(conn, *args),
        "reimbursement": evidence.figures(),
        "alerts": await _alerts(conn, *args),
        "technical": await _technical(conn, period.start, period.end),
    }
    return figures, evidence


# Each patient's days in the period: enrolled, not discharged, inside [from, to).
_PATIENT_DAYS = """
    SELECT p.patient_key, p.patient_id, p.programme, p.enrolled_at, p.discharged_at,
           greatest(0, extract(epoch FROM least($2, coalesce(p.discharged_at, $2))
                                    - greatest($1, p.enrolled_at)) / 86400) AS days
    FROM patients p
    WHERE p.enrolled_at < $2 AND (p.discharged_at IS NULL OR p.discharged_at > $1)
      AND ($3::text IS NULL OR p.programme = $3)
"""


async def _active_file(
    conn: Connection, start: datetime, end: datetime, programme: str | None
) -> dict[str, Any]:
    rows = await conn.fetch(
        f"""
        WITH active AS ({_PATIENT_DAYS})
        SELECT programme, count(*) AS active,
               count(*) FILTER (WHERE enrolled_at >= $1) AS enrolled,
               count(*) FILTER (WHERE discharged_at < $2) AS discharged,
               sum(days) AS patient_days
        FROM active GROUP BY programme ORDER BY programme
        """,
        start,
        end,
        programme,
    )
    period_days = (end - start).total_seconds() / 86400
    return {
        r["programme"]: {
            "active": r["active"],
            "enrolled": r["enrolled"],
            "discharged": r["discharged"],
            "patient_days": round(float(r["patient_days"]), 2),
            # Mean number of patients followed on a day of the period (a month's mean
            # active file when the period is a month).
            "mean_active_file": round(float(r["patient_days"]) / period_days, 2),
        }
        for r in rows
    }


async def _alerts(
    conn: Connection, start: datetime, end: datetime, programme: str | None
) -> dict[str, Any]:
    """Episodes opened in the period (the care team's items) and the findings they hold:
    per 100 patient-days, how fast they were handled, what was done, and how often an
    episode led to a clinical action (the rules' positive predictive value as the
    clinicians judged it)."""
    patient_days = await conn.fetchval(
        f"SELECT coalesce(sum(days), 0) FROM ({_PATIENT_DAYS}) a", start, end, programme
    )
    episodes = await conn.fetch(
        """
        SELECT e.job, e.severity, e.opened_at, e.acknowledged_at, e.resolved_at,
               e.disposition, p.programme,
               (SELECT array_agg(DISTINCT f.rule_id) FROM findings f
                WHERE f.episode_id = e.episode_id) AS rules
        FROM episodes e JOIN patients p USING (patient_key)
        WHERE e.opened_at >= $1 AND e.opened_at < $2 AND ($3::text IS NULL OR p.programme = $3)
        """,
        start,
        end,
        programme,
    )
    findings = await conn.fetch(
        """
        SELECT f.rule_id, f.severity, count(*) AS n
        FROM findings f JOIN patients p USING (patient_key)
        WHERE f.raised_at >= $1 AND f.raised_at < $2 AND ($3::text IS NULL OR p.programme = $3)
        GROUP BY 1, 2
        """,
        start,
        end,
        programme,
    )
    per_100 = 100 / float(patient_days) if patient_days else 0.0
    opened: dict[str, dict[str, int]] = {}
    handling: dict[str, dict[str, list[float]]] = {}
    dispositions: Counter[str] = Counter()
    acted: dict[str, dict[str, list[bool]]] = {"by_rule": {}, "by_programme": {}}
    for e in episodes:
        severity = Severity(e["severity"]).label
        by_job = opened.setdefault(e["job"], {})
        by_job[severity] = by_job.get(severity, 0) + 1
        times = handling.setdefault(severity, {"acknowledge": [], "resolve": []})
        if e["acknowledged_at"] is not None:
            times["acknowledge"].append((e["acknowledged_at"] - e["opened_at"]).total_seconds())
        if e["resolved_at"] is not None:
            times["resolve"].append((e["resolved_at"] - e["opened_at"]).total_seconds())
        if e["disposition"] is not None:
            dispositions[e["disposition"]] += 1
            disposition = Disposition(e["disposition"])
            if e["job"] == Job.CLINICAL and disposition.chosen_by_clinicians:
                action = disposition.clinical_action
                acted["by_programme"].setdefault(e["programme"], []).append(action)
                for rule in e["rules"] or ():
                    acted["by_rule"].setdefault(rule, []).append(action)
    finding_rates: dict[str, dict[str, float]] = {}
    for r in findings:
        rates = finding_rates.setdefault(r["rule_id"], {})
        rates[Severity(r["severity"]).label] = round(r["n"] * per_100, 3)
    return {
        "patient_days": round(float(patient_days), 2),
        "episodes_opened": len(episodes),
        "episodes_per_100_patient_days": {
            job: {s: round(n * per_100, 3) for s, n in sorted(counts.items())}
            for job, counts in sorted(opened.items())
        },
        "findings_per_100_patient_days": dict(sorted(finding_rates.items())),
        "handling_seconds": {
            severity: {
                "acknowledge": _spread(times["acknowledge"]),
                "resolve": _spread(times["resolve"]),
                "acknowledged_within_target": round(
                    sum(t <= ACK_TARGET_S[severity] for t in times["acknowledge"])
                    / sum(opened_job.get(severity, 0) for opened_job in opened.values()),
                    4,
                ),
                "target_s": ACK_TARGET_S[severity],
            }
            for severity, times in sorted(handling.items())
        },
        "dispositions": dict(sorted(dispositions.items())),
        "clinical_action": {
            group: {
                key: {
                    "episodes": len(actions),
                    "with_clinical_action": sum(actions),
                    "share": round(sum(actions) / len(actions), 4),
                }
                for key, actions in sorted(by.items())
            }
            for group, by in acted.items()
        },
        "news2": await _news2(conn, start, end, programme),
    }


async def _news2(
    conn: Connection, start: datetime, end: datetime, programme: str | None
) -> dict[str, Any]:
    """Every NEWS2 score computed (each time one of its parameters arrived), alerting or
    not, over the period's whole UTC days; the shares in the orange and red bands."""
    rows = await conn.fetch(
        """
        SELECT score, sum(sets)::bigint AS sets FROM alert_scores
        WHERE rule_id = 'news2'
          AND day >= ($1 AT TIME ZONE 'UTC')::date AND day < ($2 AT TIME ZONE 'UTC')::date
          AND ($3::text IS NULL OR programme = $3)
        GROUP BY score ORDER BY score
        """,
        start,
        end,
        programme,
    )
    counts = {r["score"]: r["sets"] for r in rows}
    total = sum(counts.values())

    def share(at_least: int) -> float | None:
        return (
            round(sum(n for s, n in counts.items() if s >= at_least) / total, 4) if total else None
        )

    return {
        "scored_sets": total,
        "by_score": {str(score): n for score, n in counts.items()},
        "share_5_or_more": share(5),
        "share_7_or_more": share(7),
    }


def _spread(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "median": None, "p90": None, "max": None}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {
        "count": len(ordered),
        "median": round(statistics.median(ordered), 1),
        "p90": round(p90, 1),
        "max": round(ordered[-1], 1),
    }


async def _technical(conn: Connection, start: datetime, end: datetime) -> dict[str, Any]:
    minutes = await conn.fetch(
        """
        SELECT date_trunc('minute', written_at) AS minute, sum(readings_stored) AS stored
        FROM ingest_ledger WHERE written_at >= $1 AND written_at < $2 GROUP BY 1
        """,
        start,
        end,
    )
    per_minute = [float(r["stored"]) / 60 for r in minutes]
    latency = await conn.fetchrow(
        """
        SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (
                   ORDER BY extract(epoch FROM received_at - measured_at)) AS durable
        FROM readings WHERE received_at >= $1 AND received_at < $2
        """,
        start,
        end,
    )
    alert_latency = await conn.fetchval(
        """
        SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (
                   ORDER BY extract(epoch FROM raised_at - first_fired_at))
        FROM findings WHERE raised_at >= $1 AND raised_at < $2
        """,
        start,
        end,
    )
    rejects = await conn.fetch(
        "SELECT reason, count(*) AS n FROM dead_letters "
        "WHERE rejected_at >= $1 AND rejected_at < $2 GROUP BY reason ORDER BY reason",
        start,
        end,
    )
    partitions = await conn.fetch(
        """
        SELECT consumer_group, topic, partition, min(first_offset) AS first_offset,
               max(next_offset) AS next_offset, sum(next_offset - first_offset) AS offsets,
               sum(messages) AS messages, sum(readings_stored) AS stored,
               sum(readings_duplicate) AS duplicates, sum(dead_letters) AS dead_letters
        FROM ingest_ledger WHERE written_at >= $1 AND written_at < $2
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        """,
        start,
        end,
    )
    return {
        "dead_letter_replays": await _replays(conn, start, end),
        "throughput_readings_per_s": {
            "sustained": round(statistics.mean(per_minute), 2) if per_minute else 0.0,
            "peak_minute": round(max(per_minute), 2) if per_minute else 0.0,
        },
        "latency_s": {
            "device_to_durable": _quantiles(latency["durable"] if latency else None),
            "device_to_alert": _quantiles(alert_latency),
        },
        "rejected_by_reason": {r["reason"]: r["n"] for r in rejects},
        "duplicates": sum(int(p["duplicates"]) for p in partitions),
        "reconciliation": [
            {
                "consumer_group": p["consumer_group"],
                "topic": p["topic"],
                "partition": p["partition"],
                "first_offset": p["first_offset"],
                "next_offset": p["next_offset"],
                "offsets_consumed": int(p["offsets"]),
                "messages": int(p["messages"]),
                "readings_stored": int(p["stored"]),
                "duplicates": int(p["duplicates"]),
                "dead_lettered": int(p["dead_letters"]),
                # Every offset consumed is a message accounted for: 0, or readings lost.
                "unaccounted_offsets": int(p["offsets"]) - int(p["messages"]),
            }
            for p in partitions
        ],
    }


async def _replays(conn: Connection, start: datetime, end: datetime) -> dict[str, int]:
    """Dead letters brought back in the period, beside the reconciliation: a replay is a
    record of its own (consumed, then stored, duplicate or dead-lettered again, so the
    per-offset balance holds), and here the dead letters it moved, by outcome."""
    row = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE rejected_at >= $1 AND rejected_at < $2) AS dead_lettered,
               count(*) FILTER (WHERE rejected_at >= $1 AND rejected_at < $2
                                  AND replayed_at IS NULL) AS still_dead_lettered,
               count(*) FILTER (WHERE rejected_at >= $1 AND rejected_at < $2
                                  AND parked_until IS NOT NULL AND replay_of IS NULL) AS parked,
               count(*) FILTER (WHERE park_expired_at >= $1 AND park_expired_at < $2) AS expired,
               count(*) FILTER (WHERE replayed_at >= $1 AND replayed_at < $2) AS replayed,
               count(*) FILTER (WHERE replayed_at >= $1 AND replayed_at < $2
                                  AND replay_outcome = 'stored') AS stored,
               count(*) FILTER (WHERE replayed_at >= $1 AND replayed_at < $2
                                  AND replay_outcome = 'duplicate') AS duplicate,
               count(*) FILTER (WHERE replayed_at >= $1 AND replayed_at < $2
                                  AND replay_outcome = 'rejected') AS rejected_again
        FROM dead_letters
        """,
        start,
        end,
    )
    assert row is not None
    return {name: int(value) for name, value in row.items()}


def _quantiles(values: list[float] | None) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    return {"p50": round(values[0], 3), "p99": round(values[1], 3)}
