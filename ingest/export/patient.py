"""A patient's data for a period, read once for every export format.

The same query serves the API (as role telemon_api: row-level security keeps
each clinician to their teams' patients) and the CLI (as the tables' owner).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alerts.model import Severity
from devices.catalogue import BY_CODE, VitalKind
from devices.identity import InsIdentity
from ingest.platform import Connection

__all__ = ["ExportedAlert", "ExportedReading", "PatientExport", "load_export"]


@dataclass(frozen=True, slots=True)
class ExportedReading:
    device_id: str
    kind: VitalKind
    value: float  # in the catalogue's unit
    measured_at: datetime
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ExportedAlert:
    alert_id: int
    rule_id: str
    severity: Severity
    status: str
    first_fired_at: datetime
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None
    explanation: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PatientExport:
    patient_id: str
    programme: str
    start: datetime
    end: datetime
    devices: list[tuple[str, str]]  # (device_id, device_type)
    readings: list[ExportedReading]
    alerts: list[ExportedAlert]
    identity: InsIdentity | None = None


async def load_export(
    conn: Connection, patient_id: str, start: datetime, end: datetime
) -> PatientExport | None:
    """The patient's devices, readings measured in [start, end) and alerts first fired then;
    None if the patient is unknown (or, for the API's role, not of the clinician's teams)."""
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
    alerts = await conn.fetch(
        """
        SELECT alert_id, rule_id, severity, status, first_fired_at, raised_at, acknowledged_at,
               acknowledged_by, resolved_at, resolved_by, resolution, explanation
        FROM alerts WHERE patient_key = $1 AND first_fired_at >= $2 AND first_fired_at < $3
        ORDER BY alert_id
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
        alerts=[
            ExportedAlert(
                **{k: v for k, v in a.items() if k not in ("severity", "explanation")},
                severity=Severity(a["severity"]),
                explanation=json.loads(a["explanation"]),
            )
            for a in alerts
        ],
    )
