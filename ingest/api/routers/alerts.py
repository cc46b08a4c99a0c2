"""Alerts: the worklist's list, one alert with its recent readings, and what clinicians do
to an alert (acknowledge, resolve, snooze, escalate)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Query, Request

from alerts import actions
from alerts.model import Severity
from ingest.api.access import Api, Refused, Session, WhoAsks, audited
from ingest.api.auth import Clinician
from ingest.api.routers.patients import recent_readings
from ingest.api.schemas import (
    AlertDetail,
    AlertOut,
    AlertPage,
    DbId,
    ErrorOut,
    Name,
    Note,
    Offset,
    PatientId,
    SnoozeRequest,
)
from ingest.api.stream import current_position
from ingest.platform import Connection

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

SEVERITIES = {s.label: s.value for s in Severity}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "The alert is already resolved."}
}

_ALERTS = """
    SELECT a.*, p.patient_id, p.programme FROM alerts a
    JOIN patients p ON p.patient_key = a.patient_key
"""


@router.get("", response_model=AlertPage)
async def list_alerts(
    request: Request,
    who: WhoAsks,
    status: Annotated[list[Literal["open", "acknowledged", "resolved"]] | None, Query()] = None,
    severity: Annotated[list[Literal["info", "orange", "red"]] | None, Query()] = None,
    programme: Name | None = None,
    patient_id: PatientId | None = None,
    order: Literal["severity", "newest"] = "severity",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    statuses = status or ["open", "acknowledged"]
    severities = [SEVERITIES[s] for s in severity or SEVERITIES]
    ordering = "a.severity DESC, a.raised_at" if order == "severity" else "a.raised_at DESC"
    async with audited(request, who, "R", "alert.search", patient_id) as s:
        rows = await s.conn.fetch(
            f"""{_ALERTS} WHERE a.status = ANY($1::text[]) AND a.severity = ANY($2::int[])
            AND ($3::text IS NULL OR p.programme = $3)
            AND ($4::text IS NULL OR p.patient_id = $4)
            ORDER BY {ordering}, a.alert_id LIMIT $5 OFFSET $6""",
            statuses,
            severities,
            programme,
            patient_id,
            limit + 1,
            offset,
        )
        position = await current_position(s.conn)
    more = len(rows) > limit
    return {
        "alerts": [_alert(r) for r in rows[:limit]],
        "next_offset": offset + limit if more else None,
        "feed_position": str(position),
    }


@router.get("/{alert_id}", response_model=AlertDetail)
async def get_alert(request: Request, who: WhoAsks, alert_id: DbId) -> dict[str, Any]:
    async with audited(request, who, "R", "alert.read", None) as s:
        row = await _the_alert(s, alert_id)
        readings = await recent_readings(
            s.conn, row["patient_key"], None, datetime.now(UTC) - timedelta(hours=72), None
        )
    return {"alert": _alert(row), "recent_readings": readings}


@router.post("/{alert_id}/acknowledge", response_model=AlertOut, responses=_CONFLICT)
async def acknowledge(request: Request, api: Api, who: WhoAsks, alert_id: DbId) -> dict[str, Any]:
    return await _act(
        request,
        api,
        who,
        alert_id,
        "acknowledge",
        lambda conn: actions.acknowledge(conn, alert_id, who.subject),
    )


@router.post("/{alert_id}/resolve", response_model=AlertOut, responses=_CONFLICT)
async def resolve(
    request: Request, api: Api, who: WhoAsks, alert_id: DbId, body: Note
) -> dict[str, Any]:
    return await _act(
        request,
        api,
        who,
        alert_id,
        "resolve",
        lambda conn: actions.resolve(conn, alert_id, who.subject, body.note),
    )


@router.post("/{alert_id}/snooze", response_model=AlertOut, responses=_CONFLICT)
async def snooze(
    request: Request, api: Api, who: WhoAsks, alert_id: DbId, body: SnoozeRequest
) -> dict[str, Any]:
    if body.until <= datetime.fromtimestamp(api.clock.now_ms() / 1000, UTC):
        raise Refused(400, "until: must be in the future")
    return await _act(
        request,
        api,
        who,
        alert_id,
        "snooze",
        lambda conn: actions.snooze(conn, alert_id, who.subject, body.until),
    )


@router.post("/{alert_id}/escalate", response_model=AlertOut, responses=_CONFLICT)
async def escalate(
    request: Request, api: Api, who: WhoAsks, alert_id: DbId, body: Note
) -> dict[str, Any]:
    return await _act(
        request,
        api,
        who,
        alert_id,
        "escalate",
        lambda conn: actions.escalate(conn, alert_id, who.subject, body.note),
    )


async def _act(
    request: Request,
    api: Api,
    who: Clinician,
    alert_id: int,
    subtype: str,
    action: Callable[[Connection], Awaitable[None]],
) -> dict[str, Any]:
    async with audited(request, who, "U", f"alert.{subtype}", None) as s:
        row = await _the_alert(s, alert_id)
        if row["status"] == "resolved":
            raise Refused(409, f"alert {alert_id} is already resolved")
        await action(s.conn)
        updated = await _the_alert(s, alert_id)
    handled = {
        "acknowledge": api.metrics.time_to_acknowledge,
        "resolve": api.metrics.time_to_resolve,
    }
    if subtype in handled and updated["status"] != row["status"]:
        waited = (datetime.now(UTC) - row["raised_at"]).total_seconds()
        handled[subtype].labels(Severity(row["severity"]).label).observe(waited)
    return _alert(updated)


async def _the_alert(s: Session, alert_id: int) -> asyncpg.Record:
    row = await s.conn.fetchrow(f"{_ALERTS} WHERE a.alert_id = $1", alert_id)
    if row is None:  # absent, or another team's: one answer
        raise Refused(404, f"no alert {alert_id} among your care teams' patients")
    s.patient_id = row["patient_id"]
    return row


def _alert(r: asyncpg.Record) -> dict[str, Any]:
    alert = dict(r)
    alert["severity"] = Severity(r["severity"]).label
    alert["explanation"] = json.loads(r["explanation"])
    return alert
