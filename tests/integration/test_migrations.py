"""Upgrading a schema that holds data: the alerts of before 0007 become findings in
episodes, and their events follow them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from devices.registry import sync_reference_data
from ingest.platform import connect, migrate
from ingest.platform.db import _migrations


@pytest.fixture
async def schema(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    name = f"m_{uuid.uuid4().hex[:12]}"
    conn = await connect(postgres_dsn, name)
    try:
        yield conn
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await conn.close()


async def test_alerts_become_findings_in_episodes(schema: asyncpg.Connection) -> None:
    conn = schema
    name = await conn.fetchval("SELECT current_setting('search_path')")
    before = [m for m in _migrations() if m[0] < "0007"]
    async with conn.transaction():
        await conn.execute(f'CREATE SCHEMA "{name}"')
        await conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz "
            "NOT NULL DEFAULT now())"
        )
        for migration, sql in before:
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", migration)
    await sync_reference_data(conn)
    await conn.execute("INSERT INTO patients (patient_id, programme) VALUES ('p-1', 'covid')")
    legacy = """
        INSERT INTO alerts (patient_key, rule_id, rule_version, severity, status, first_fired_at,
            last_fired_at, raised_at, explanation, acknowledged_at, acknowledged_by,
            resolved_at, resolved_by, resolution)
        SELECT patient_key, $1, 1, $2, $3, now() - $4 * interval '1 hour',
               now() - $4 * interval '1 hour', now() - $4 * interval '1 hour', '{}',
               CASE WHEN $3 <> 'open' THEN now() END, CASE WHEN $3 <> 'open' THEN 'dr' END,
               CASE WHEN $3 = 'resolved' THEN now() END,
               CASE WHEN $3 = 'resolved' THEN 'dr' END, $5
        FROM patients RETURNING alert_id
    """
    ids = {
        rule: await conn.fetchval(legacy, rule, severity, status, hours, resolution)
        for rule, severity, status, hours, resolution in (
            ("spo2_scale1", 2, "resolved", 48, "called, fine"),
            ("heart_rate", 3, "acknowledged", 2, None),
            ("news2", 2, "open", 1, None),
            ("questionnaire_missed", 2, "open", 3, None),
        )
    }
    await conn.execute(
        "INSERT INTO alert_events (alert_id, patient_key, type, severity, status, at, actor) "
        "SELECT alert_id, patient_key, 'raised', severity, 'open', raised_at, 'telemon' "
        "FROM alerts"
    )

    assert await migrate(conn, name) == [m for m, _ in _migrations() if m >= "0007"]

    episodes = await conn.fetch(
        "SELECT e.job, e.severity, e.status, e.disposition, e.note, "
        "array_agg(f.rule_id ORDER BY f.rule_id) AS rules, "
        "(SELECT count(*) FROM episode_events v WHERE v.episode_id = e.episode_id) AS events "
        "FROM episodes e JOIN findings f USING (episode_id) GROUP BY e.episode_id "
        "ORDER BY e.job, e.status DESC"
    )
    # The unresolved alerts of the patient make one episode per job (red: the highest;
    # open: not all of them were acknowledged); each old event follows its alert.
    assert [tuple(e) for e in episodes] == [
        ("clinical", 2, "resolved", None, "called, fine", ["spo2_scale1"], 1),
        ("clinical", 3, "open", None, None, ["heart_rate", "news2"], 2),
        ("data", 2, "open", None, None, ["questionnaire_missed"], 1),
    ]
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM findings "
            "WHERE status = 'open' AND finding_id = ANY($1::bigint[])",
            list(ids.values()),
        )
        == 3
    )
