"""Care teams: who follows which patients (what row-level security enforces)."""

from __future__ import annotations

from collections.abc import Sequence

from ingest.platform import Connection, TelemonError

__all__ = ["TeamError", "add_every_patient", "add_member", "add_patients", "create_team"]


class TeamError(TelemonError):
    """An unknown team or patient."""


async def create_team(conn: Connection, team_id: str, name: str) -> None:
    await conn.execute(
        "INSERT INTO care_teams (team_id, name) VALUES ($1, $2) "
        "ON CONFLICT (team_id) DO UPDATE SET name = $2",
        team_id,
        name,
    )


async def add_member(
    conn: Connection, team_id: str, clinician: str, *, reads_identity: bool = False
) -> None:
    """`clinician` is the subject (`sub`) of their OpenID Connect tokens; `reads_identity`:
    they may read the INS identity of the team's patients (a member re-added gets the flag
    given now)."""
    await _known_team(conn, team_id)
    await conn.execute(
        "INSERT INTO care_team_members (team_id, clinician, reads_identity) VALUES ($1, $2, $3) "
        "ON CONFLICT (team_id, clinician) DO UPDATE SET reads_identity = $3",
        team_id,
        clinician,
        reads_identity,
    )


async def add_patients(conn: Connection, team_id: str, patient_ids: Sequence[str]) -> int:
    """The team follows these patients from now on; returns how many were new to it."""
    await _known_team(conn, team_id)
    async with conn.transaction():
        keys = await conn.fetch(
            "SELECT patient_id, patient_key FROM patients WHERE patient_id = ANY($1::text[])",
            list(patient_ids),
        )
        unknown = set(patient_ids) - {r["patient_id"] for r in keys}
        if unknown:
            raise TeamError(f"unknown patients: {', '.join(sorted(unknown)[:10])}")
        added: int = await conn.fetchval(
            """
            WITH added AS (
                INSERT INTO patient_care_teams (team_id, patient_key)
                SELECT $1, unnest($2::int[]) ON CONFLICT DO NOTHING RETURNING 1
            ) SELECT count(*) FROM added
            """,
            team_id,
            [r["patient_key"] for r in keys],
        )
    return added


async def add_every_patient(conn: Connection, team_id: str) -> None:
    """The team follows every enrolled patient (the demo's single team)."""
    await conn.execute(
        "INSERT INTO patient_care_teams (team_id, patient_key) "
        "SELECT $1, patient_key FROM patients ON CONFLICT DO NOTHING",
        team_id,
    )


async def _known_team(conn: Connection, team_id: str) -> None:
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT FROM care_teams WHERE team_id = $1)", team_id
    ):
        raise TeamError(f"unknown care team {team_id!r} (telemon team create)")
