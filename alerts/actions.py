"""What clinicians do to episodes and thresholds, as database operations.

An episode goes open -> acknowledged -> resolved, with a snooze until a time
while it is unresolved; resolving records a disposition (what was done) and
closes its findings. Each action is an event in `episode_events` (so it
reaches the alerts topic and the live feed) signed by the clinician. Threshold
overrides are per patient, validated against the rule catalogue, kept with who
changed them and when (and every change in `threshold_override_history`);
running ingest processes pick them up (alerts.step polls the history).

`telemon override` calls the override functions; the clinicians' API
(ingest.api) calls all of them.
"""

from __future__ import annotations

from datetime import datetime

from alerts.lifecycle import record_events
from alerts.model import Disposition
from alerts.programmes import check_parameter
from ingest.platform import Connection, TelemonError

__all__ = [
    "EpisodeActionError",
    "acknowledge",
    "escalate",
    "remove_override",
    "resolve",
    "set_override",
    "snooze",
]


class EpisodeActionError(TelemonError):
    """An action that does not apply: unknown episode or patient, a resolved episode, a
    disposition a clinician may not choose."""


async def acknowledge(conn: Connection, episode_id: int, by: str) -> None:
    """Someone is on it. Acknowledging an acknowledged episode changes nothing."""
    await _act(
        conn,
        episode_id,
        by,
        "acknowledged",
        "status = 'acknowledged', acknowledged_at = now(), acknowledged_by = $2",
        (by,),
        {},
        only_if="status = 'open'",
    )


async def resolve(
    conn: Connection, episode_id: int, by: str, disposition: Disposition, note: str | None
) -> None:
    """Done, and what was done; the episode's findings are closed with it."""
    if not disposition.chosen_by_clinicians:
        raise EpisodeActionError(f"{disposition.value!r} is recorded by telemon, not chosen")
    async with conn.transaction():
        await _act(
            conn,
            episode_id,
            by,
            "resolved",
            "status = 'resolved', resolved_at = now(), resolved_by = $2, disposition = $3, "
            "note = $4, snoozed_until = NULL",
            (by, disposition.value, note),
            {"disposition": disposition.value, "note": note},
        )
        await conn.execute(
            "UPDATE findings SET status = 'resolved', resolved_at = now(), resolved_by = $2, "
            "resolution = $3 WHERE episode_id = $1 AND status = 'open'",
            episode_id,
            by,
            disposition.value,
        )


async def escalate(conn: Connection, episode_id: int, by: str, note: str | None = None) -> None:
    """Raise to red (a clinician's judgement, or a hand-over to the physician on call)."""
    await _act(
        conn,
        episode_id,
        by,
        "escalated",
        "severity = 3, severity_since = now(), status = 'open', snoozed_until = NULL",
        (),
        {"note": note},
    )


async def snooze(conn: Connection, episode_id: int, by: str, until: datetime) -> None:
    await _act(
        conn,
        episode_id,
        by,
        "snoozed",
        "snoozed_until = $2",
        (until,),
        {"until": until.isoformat()},
    )


async def _act(
    conn: Connection,
    episode_id: int,
    by: str,
    event: str,
    assignments: str,
    arguments: tuple[object, ...],
    detail: dict[str, object],
    *,
    only_if: str = "true",
) -> None:
    """Change an unresolved episode and record the event, in one transaction."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT status FROM episodes WHERE episode_id = $1 FOR UPDATE", episode_id
        )
        if row is None or row["status"] == "resolved":
            raise EpisodeActionError(f"episode {episode_id} does not exist or is already resolved")
        changed = await conn.fetchrow(
            f"UPDATE episodes SET {assignments} WHERE episode_id = $1 AND {only_if} "
            "RETURNING patient_key, severity, status",
            episode_id,
            *arguments,
        )
        if changed is None:
            return  # nothing to do (acknowledged already)
        await record_events(
            conn,
            [
                (
                    episode_id,
                    changed["patient_key"],
                    event,
                    changed["severity"],
                    changed["status"],
                    detail,
                )
            ],
            None,
            actor=by,
        )


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
            raise EpisodeActionError(f"unknown patient {patient_id!r}")
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
