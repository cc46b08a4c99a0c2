"""What clinicians do to alerts and thresholds, as database operations.

Alert actions follow the lifecycle open -> acknowledged -> resolved, with a
snooze until a time on an open or acknowledged alert; each action is an
event in `alert_events` (so it reaches `telemon.alerts.v1`) signed by the
clinician. Threshold overrides are per patient, validated against the rule
catalogue, kept with who changed them and when (and every change in
`threshold_override_history`); running ingest processes pick them up
(alerts.step polls the history).

`telemon override` calls the override functions; the clinicians' API
(ingest.api) calls all of them.
"""

from __future__ import annotations

import json
from datetime import datetime

from alerts.programmes import check_parameter
from ingest.platform import Connection, TelemonError

__all__ = [
    "AlertActionError",
    "acknowledge",
    "escalate",
    "remove_override",
    "resolve",
    "set_override",
    "snooze",
]


class AlertActionError(TelemonError):
    """An action that does not apply: unknown alert or patient, or a closed alert."""


async def acknowledge(conn: Connection, alert_id: int, by: str) -> None:
    await _act(
        conn,
        alert_id,
        by,
        "acknowledged",
        "status = 'acknowledged', acknowledged_at = now(), acknowledged_by = $2",
        (by,),
        {},
    )


async def resolve(conn: Connection, alert_id: int, by: str, note: str | None = None) -> None:
    await _act(
        conn,
        alert_id,
        by,
        "resolved",
        "status = 'resolved', resolved_at = now(), resolved_by = $2, resolution = $3, "
        "snoozed_until = NULL",
        (by, note),
        {"resolution": note},
    )


async def escalate(conn: Connection, alert_id: int, by: str, note: str | None = None) -> None:
    """Raise to red (a clinician's judgement, or a hand-over to the physician on call)."""
    await _act(conn, alert_id, by, "escalated", "severity = 3", (), {"note": note})


async def snooze(conn: Connection, alert_id: int, by: str, until: datetime) -> None:
    await _act(
        conn, alert_id, by, "snoozed", "snoozed_until = $2", (until,), {"until": until.isoformat()}
    )


async def _act(
    conn: Connection,
    alert_id: int,
    by: str,
    event: str,
    assignments: str,
    arguments: tuple[object, ...],
    detail: dict[str, object],
) -> None:
    """Change an alert that is not resolved yet, and record the event, in one transaction."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"UPDATE alerts SET {assignments} WHERE alert_id = $1 AND status <> 'resolved' "
            "RETURNING patient_key, severity, status",
            alert_id,
            *arguments,
        )
        if row is None:
            raise AlertActionError(f"alert {alert_id} does not exist or is already resolved")
        await conn.execute(
            """
            INSERT INTO alert_events (alert_id, patient_key, type, severity, status, at, actor,
                                      detail)
            VALUES ($1, $2, $3, $4, $5, now(), $6, $7::jsonb)
            """,
            alert_id,
            row["patient_key"],
            event,
            row["severity"],
            row["status"],
            by,
            json.dumps(detail),
        )
        await conn.execute("SELECT pg_notify('telemon_outbox', 'alert_events')")


async def set_override(
    conn: Connection,
    patient_id: str,
    parameter: str,
    value: float,
    by: str,
    note: str | None = None,
) -> None:
    """Override one threshold for one patient (refused if the catalogue does not allow it)."""
    check_parameter(parameter, value)
    await _change_override(conn, patient_id, parameter, value, by, note)


async def remove_override(
    conn: Connection, patient_id: str, parameter: str, by: str, note: str | None = None
) -> None:
    """Back to the programme's value."""
    await _change_override(conn, patient_id, parameter, None, by, note)


async def _change_override(
    conn: Connection,
    patient_id: str,
    parameter: str,
    value: float | None,
    by: str,
    note: str | None,
) -> None:
    async with conn.transaction():
        patient_key = await conn.fetchval(
            "SELECT patient_key FROM patients WHERE patient_id = $1", patient_id
        )
        if patient_key is None:
            raise AlertActionError(f"unknown patient {patient_id!r}")
        if value is None:
            await conn.execute(
                "DELETE FROM threshold_overrides WHERE patient_key = $1 AND parameter = $2",
                patient_key,
                parameter,
            )
        else:
            await conn.execute(
                """
                INSERT INTO threshold_overrides (patient_key, parameter, value, changed_by, note)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (patient_key, parameter) DO UPDATE
                SET value = $3, changed_by = $4, changed_at = now(), note = $5
                """,
                patient_key,
                parameter,
                value,
                by,
                note,
            )
        await conn.execute(
            """
            INSERT INTO threshold_override_history (patient_key, parameter, value, changed_by,
                                                    changed_at, note)
            VALUES ($1, $2, $3, $4, now(), $5)
            """,
            patient_key,
            parameter,
            value,
            by,
            note,
        )
