"""What clinicians do to episodes and thresholds, as database operations.

An episode goes open -> acknowledged -> resolved, with a snooze until a time
while it is unresolved; resolving records a disposition (what was done) and
closes its findings. Each action is an event in `episode_events` (so it
reaches the alerts topic and the live feed) signed by the clinician. Threshold
overrides are per patient, validated against the rule catalogue, kept with who
changed them and when (and every change in `threshold_override_history`);
running ingest processes pick them up (alerts.step polls the history).

A prescription of another frequency for one of the protocol's measures is a set of
overrides of its rule's frequency parameters, made together (alerts.protocol). A
discharge ends the follow-up: the patient's unresolved episodes are resolved with it.

`telemon override`, `telemon patients prescribe` and `telemon patients discharge` call
these; the clinicians' API (ingest.api) calls the episode, override and prescription
functions.
"""

from __future__ import annotations

from datetime import datetime

from alerts.lifecycle import record_events
from alerts.model import Disposition
from alerts.programmes import ENABLED, AlertConfig, check_parameter, measure_rule
from alerts.protocol import FREQUENCY, MEASURES
from devices.registry import Programme
from ingest.platform import Connection, TelemonError

__all__ = [
    "EpisodeActionError",
    "acknowledge",
    "discharge",
    "escalate",
    "prescribe",
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
    config: AlertConfig,
    patient_id: str,
    parameter: str,
    value: float,
    by: str,
    note: str | None = None,
) -> None:
    """Override one parameter for one patient: refused if the catalogue does not allow the
    value, or if the patient's programme does not run the rule."""
    check_parameter(parameter, value)
    async with conn.transaction():
        await _check_runs(conn, config, patient_id, parameter)
        await _change_override(conn, patient_id, parameter, value, by, note)


async def remove_override(
    conn: Connection, patient_id: str, parameter: str, by: str, note: str | None = None
) -> None:
    """Back to the programme's value."""
    await _change_override(conn, patient_id, parameter, None, by, note)


async def prescribe(
    conn: Connection,
    config: AlertConfig,
    patient_id: str,
    measure: str,
    frequency: dict[str, float],
    by: str,
    note: str | None = None,
) -> None:
    """Another frequency of one of the protocol's measures for one patient (`every_days`,
    `times`, `due_hour`: those given change, from today), in one transaction."""
    unknown = set(frequency) - set(FREQUENCY)
    if unknown or not frequency:
        raise EpisodeActionError(f"a frequency is {', '.join(FREQUENCY)}, not {sorted(unknown)}")
    if measure not in MEASURES:
        raise EpisodeActionError(f"unknown measure {measure!r}: one of {', '.join(MEASURES)}")
    rule = measure_rule(measure).id
    for name, value in frequency.items():
        check_parameter(f"{rule}.{name}", value)
    async with conn.transaction():
        await _check_runs(conn, config, patient_id, f"{rule}.{ENABLED}")
        for name, value in frequency.items():
            await _change_override(conn, patient_id, f"{rule}.{name}", value, by, note)


async def discharge(
    conn: Connection, patient_id: str, at: datetime, by: str, note: str | None = None
) -> int:
    """End the patient's follow-up at `at`; their unresolved episodes are resolved, as
    "follow-up ended". Returns how many."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE patients SET discharged_at = $2 WHERE patient_id = $1 "
            "AND discharged_at IS NULL AND enrolled_at <= $2 RETURNING patient_key",
            patient_id,
            at,
        )
        if row is None:
            known = await conn.fetchrow(
                "SELECT enrolled_at, discharged_at FROM patients WHERE patient_id = $1",
                patient_id,
            )
            if known is None:
                raise EpisodeActionError(f"unknown patient {patient_id!r}")
            if known["discharged_at"] is not None:
                raise EpisodeActionError(
                    f"{patient_id} was discharged on {known['discharged_at']:%Y-%m-%d %H:%M}"
                )
            raise EpisodeActionError(
                f"{patient_id} was enrolled on {known['enrolled_at']:%Y-%m-%d %H:%M}, after {at}"
            )
        await conn.execute(
            "INSERT INTO discharges (patient_key, discharged_at, discharged_by, note) "
            "VALUES ($1, $2, $3, $4)",
            row["patient_key"],
            at,
            by,
            note,
        )
        episodes = await conn.fetch(
            "UPDATE episodes SET status = 'resolved', resolved_at = now(), resolved_by = $2, "
            "disposition = $3, note = $4, snoozed_until = NULL "
            "WHERE patient_key = $1 AND status <> 'resolved' "
            "RETURNING episode_id, patient_key, severity, status",
            row["patient_key"],
            by,
            Disposition.FOLLOW_UP_ENDED.value,
            note,
        )
        await conn.execute(
            "UPDATE findings SET status = 'resolved', resolved_at = now(), resolved_by = $2, "
            "resolution = $3 WHERE patient_key = $1 AND status = 'open'",
            row["patient_key"],
            by,
            Disposition.FOLLOW_UP_ENDED.value,
        )
        await record_events(
            conn,
            [
                (
                    e["episode_id"],
                    e["patient_key"],
                    "resolved",
                    e["severity"],
                    e["status"],
                    {"disposition": Disposition.FOLLOW_UP_ENDED.value, "note": note},
                )
                for e in episodes
            ],
            None,
            actor=by,
        )
    return len(episodes)


async def _check_runs(
    conn: Connection, config: AlertConfig, patient_id: str, parameter: str
) -> None:
    """A rule's parameter is for the patients whose programme runs it."""
    programme = await conn.fetchval(
        "SELECT programme FROM patients WHERE patient_id = $1", patient_id
    )
    if programme is None:
        raise EpisodeActionError(f"unknown patient {patient_id!r}")
    rule_id = parameter.partition(".")[0]
    if rule_id != "patient" and rule_id not in config.programmes[Programme(programme)].rules:
        raise EpisodeActionError(f"{rule_id} is not run for {programme} patients")


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
