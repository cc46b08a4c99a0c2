"""A patient's data for a period, read once for every export format.

The same query serves the API (as role telemon_api: row-level security keeps
each clinician to their teams' patients) and the CLI (as the tables' owner).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alerts.model import Disposition, Job, Severity
from devices.catalogue import BY_CODE, VitalKind
from devices.identity import InsIdentity
from ingest.platform import Connection

__all__ = [
    "ExportedEpisode",
    "ExportedFinding",
    "ExportedReading",
    "PatientExport",
    "load_export",
]


@dataclass(frozen=True, slots=True)
class ExportedReading:
    device_id: str
    kind: VitalKind
    value: float  # in the catalogue's unit
    measured_at: datetime
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ExportedFinding:
    finding_id: int
    rule_id: str
    severity: Severity
    first_fired_at: datetime
    explanation: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ExportedEpisode:
    episode_id: int
    job: Job
    severity: Severity
    status: str
    opened_at: datetime
    first_fired_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    disposition: Disposition | None
    note: str | None
    findings: list[ExportedFinding]


@dataclass(frozen=True, slots=True)
class PatientExport:
    patient_id: str
    programme: str
    start: datetime
    end: datetime
    devices: list[tuple[str, str]]  # (device_id, device_type)
    readings: list[ExportedReading]
    episodes: list[ExportedEpisode]
    identity: InsIdentity | None = None


async def load_export(
    conn: Connection, patient_id: str, start: datetime, end: datetime
) -> PatientExport | None:
    """The patient's devices, readings measured in [start, end) and episodes first fired
    then; None if the patient is unknown (or, for the API's role, not of the clinician's
    teams)."""
    patient = await conn.fetchrow(
        "SELECT patient_key, programme FROM patients WHERE patient_id = $1", patient_id
    )
    if patient is None:
        return None
    key = patient["patient_key"]
    devices = await conn.fetch(
        "SELECT device_id, device_type FROM devices WHERE patient_key = $1 ORDER BY device_id", key
    )
    readings = await conn.fetch(
        """
        SELECT d.device_id, r.kind, r.value, r.measured_at, r.received_at
        FROM readings r JOIN devices d USING (device_key)
        WHERE r.patient_key = $1 AND r.measured_at >= $2 AND r.measured_at < $3
        ORDER BY r.measured_at, d.device_id, r.kind
        """,
        key,
        start,
        end,
    )
    episodes = await conn.fetch(
        """
        SELECT e.episode_id, e.job, e.severity, e.status, e.opened_at, e.first_fired_at,
               e.acknowledged_at, e.acknowledged_by, e.resolved_at, e.resolved_by,
               e.disposition, e.note,
               coalesce(array_agg(f.finding_id ORDER BY f.severity DESC, f.finding_id), '{}')
                   AS finding_ids,
               coalesce(array_agg(f.rule_id ORDER BY f.severity DESC, f.finding_id), '{}')
                   AS rule_ids,
               coalesce(array_agg(f.severity ORDER BY f.severity DESC, f.finding_id), '{}')
                   AS severities,
               coalesce(array_agg(f.first_fired_at ORDER BY f.severity DESC, f.finding_id),
                        '{}') AS fired,
               coalesce(array_agg(f.explanation::text ORDER BY f.severity DESC, f.finding_id),
                        '{}') AS explanations
        FROM episodes e JOIN findings f USING (episode_id)
        WHERE e.patient_key = $1 AND e.first_fired_at >= $2 AND e.first_fired_at < $3
        GROUP BY e.episode_id ORDER BY e.episode_id
        """,
        key,
        start,
        end,
    )
    return PatientExport(
        patient_id=patient_id,
        programme=patient["programme"],
        start=start,
        end=end,
        devices=[(d["device_id"], d["device_type"]) for d in devices],
        readings=[
            ExportedReading(
                r["device_id"],
                BY_CODE[r["kind"]].kind,
                r["value"],
                r["measured_at"],
                r["received_at"],
            )
            for r in readings
        ],
        episodes=[_episode(e) for e in episodes],
    )


def _episode(e: Any) -> ExportedEpisode:
    return ExportedEpisode(
        episode_id=e["episode_id"],
        job=Job(e["job"]),
        severity=Severity(e["severity"]),
        status=e["status"],
        opened_at=e["opened_at"],
        first_fired_at=e["first_fired_at"],
        acknowledged_at=e["acknowledged_at"],
        acknowledged_by=e["acknowledged_by"],
        resolved_at=e["resolved_at"],
        resolved_by=e["resolved_by"],
        disposition=Disposition(e["disposition"]) if e["disposition"] else None,
        note=e["note"],
        findings=[
            ExportedFinding(finding_id, rule_id, Severity(severity), fired, json.loads(text))
            for finding_id, rule_id, severity, fired, text in zip(
                e["finding_ids"],
                e["rule_ids"],
                e["severities"],
                e["fired"],
                e["explanations"],
                strict=True,
            )
        ],
    )
