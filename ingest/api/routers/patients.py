"""Patients of the clinician's care teams: the list, one patient, their readings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request

from ingest.api.access import Refused, WhoAsks, audited, the_patient
from ingest.api.schemas import Instant, Name, Offset, PatientId, PatientOut, Reading
from ingest.platform import Connection

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/patients", tags=["patients"])

_PATIENTS = """
    SELECT p.patient_id, p.programme, p.enrolled_at, p.discharged_at,
           coalesce((SELECT json_agg(json_build_object('device_id', d.device_id,
                                                       'device_type', d.device_type)
                                     ORDER BY d.device_id)
                     FROM devices d WHERE d.patient_key = p.patient_key), '[]') AS devices,
           (SELECT max(r.received_at) FROM readings r
            WHERE r.patient_key = p.patient_key) AS last_transmission,
           (SELECT count(DISTINCT date_trunc('day', r.measured_at)) FROM readings r
            WHERE r.patient_key = p.patient_key
              AND r.measured_at > now() - interval '7 days') AS days_7d
    FROM patients p
"""


@router.get("", response_model=list[PatientOut])
async def list_patients(
    request: Request,
    who: WhoAsks,
    programme: Name | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    async with audited(request, who, "R", "patient.search", None) as s:
        rows = await s.conn.fetch(
            f"{_PATIENTS} WHERE ($1::text IS NULL OR p.programme = $1) "
            "ORDER BY p.patient_id LIMIT $2 OFFSET $3",
            programme,
            limit,
            offset,
        )
    return [_patient(r) for r in rows]


@router.get("/{patient_id}", response_model=PatientOut)
async def get_patient(request: Request, who: WhoAsks, patient_id: PatientId) -> dict[str, Any]:
    async with audited(request, who, "R", "patient.read", patient_id) as s:
        key = await the_patient(s, patient_id)
        row = await s.conn.fetchrow(f"{_PATIENTS} WHERE p.patient_key = $1", key)
    assert row is not None  # in the same transaction
    return _patient(row)


@router.get("/{patient_id}/readings", response_model=list[Reading])
async def patient_readings(
    request: Request,
    who: WhoAsks,
    patient_id: PatientId,
    kind: Name | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
) -> list[dict[str, Any]]:
    since = since or datetime.now(UTC) - timedelta(days=7)
    async with audited(request, who, "R", "readings.read", patient_id) as s:
        patient_key = await the_patient(s, patient_id)
        if kind is not None and not await s.conn.fetchval(
            "SELECT EXISTS (SELECT FROM vital_kinds WHERE kind = $1)", kind
        ):
            raise Refused(400, f"kind: unknown kind {kind!r}")
        return await _readings(s.conn, patient_key, kind, since, until)


async def _readings(
    conn: Connection,
    patient_key: int,
    kind: str | None,
    since: datetime,
    until: datetime | None,
) -> list[dict[str, Any]]:
    """A patient's readings measured since `since` (and before `until`), oldest first."""
    rows = await conn.fetch(
        """
        SELECT k.kind, r.value, k.unit, r.measured_at FROM readings r
        JOIN vital_kinds k ON k.code = r.kind
        WHERE r.patient_key = $1 AND ($2::text IS NULL OR k.kind = $2)
          AND r.measured_at >= $3 AND ($4::timestamptz IS NULL OR r.measured_at < $4)
        ORDER BY r.measured_at, k.kind LIMIT 20000
        """,
        patient_key,
        kind,
        since,
        until,
    )
    return [dict(r) for r in rows]


def _patient(r: asyncpg.Record) -> dict[str, Any]:
    patient = dict(r)
    patient["devices"] = json.loads(r["devices"])
    patient["adherence_7d"] = round(r["days_7d"] / 7, 3)
    return patient
