"""The clinicians' API for real: OpenID Connect tokens from the development issuer, care-team
isolation enforced by PostgreSQL, the audit trail, errors, and the live feed's resume."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from alerts.actions import acknowledge
from ingest.api.audit import query_audit
from ingest.api.server import API_ROLE
from ingest.api.stream import FeedPosition, events_after
from ingest.platform import create_pool
from tests.feed_support import PATIENT_A, PATIENT_B, heart_rate, running_api, two_teams
from tests.support import Stack, eventually, run_cli


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def red_alerts(stack: Stack) -> dict[str, int]:
    """Both patients' red heart-rate alerts, raised by the pipeline: patient -> alert id.
    (NEWS2 raises an orange alert for each as well.)"""
    await stack.produce([heart_rate(PATIENT_A, 140), heart_rate(PATIENT_B, 140)])
    db = await stack.db()

    async def raised() -> bool:
        count: int = await db.fetchval("SELECT count(*) FROM alerts")
        return count == 4

    await eventually(raised, 30, "the alerts")
    rows = await db.fetch(
        "SELECT p.patient_id, a.alert_id FROM alerts a JOIN patients p USING (patient_key) "
        "WHERE a.rule_id = 'heart_rate'"
    )
    return {r["patient_id"]: r["alert_id"] for r in rows}


async def test_api_care_teams_errors_and_audit(stack: Stack, tmp_path: Path) -> None:
    await two_teams(stack)
    async with stack.ingest(), running_api(stack, tmp_path / "dev.pem") as api:
        alert = await red_alerts(stack)
        async with api.client("dr-a") as dr_a, api.client(None) as nobody:
            page = (await dr_a.get("/api/v1/alerts")).json()
            listed = [(a["patient_id"], a["rule_id"], a["severity"]) for a in page["alerts"]]
            assert listed == [(PATIENT_A, "heart_rate", "red"), (PATIENT_A, "news2", "orange")]
            assert page["alerts"][0]["explanation"]["values"]
            FeedPosition.parse(page["feed_position"])

            detail = (await dr_a.get(f"/api/v1/alerts/{alert[PATIENT_A]}")).json()
            assert [r["value"] for r in detail["recent_readings"]] == [140]

            # Not authenticated, forged, foreign team, missing, bad parameters: never a 500.
            expired = bearer(api.issuer.token("dr-a", None, api.audience, lifetime_s=-60))
            elsewhere = bearer(api.issuer.token("dr-a", None, "another-service"))
            refused = {
                "no token": (await nobody.get("/api/v1/alerts"), 401),
                "forged": (
                    await nobody.get("/api/v1/alerts", headers={"Authorization": "Bearer x.y.z"}),
                    401,
                ),
                "expired": (await nobody.get("/api/v1/alerts", headers=expired), 401),
                "other audience": (await nobody.get("/api/v1/alerts", headers=elsewhere), 401),
                # Another team's is answered as what does not exist (no enumeration).
                "foreign alert": (await dr_a.get(f"/api/v1/alerts/{alert[PATIENT_B]}"), 404),
                "foreign patient": (await dr_a.get(f"/api/v1/patients/{PATIENT_B}"), 404),
                "no alert": (await dr_a.get("/api/v1/alerts/987654"), 404),
                "no patient": (await dr_a.get("/api/v1/patients/p-nobody"), 404),
                "bad severity": (await dr_a.get("/api/v1/alerts?severity=purple"), 400),
                "bad limit": (await dr_a.get("/api/v1/alerts?limit=0"), 400),
                "bad id": (await dr_a.get("/api/v1/alerts/abc"), 400),
                "bad kind": (await dr_a.get(f"/api/v1/patients/{PATIENT_A}/readings?kind=x"), 400),
                "naive time": (
                    await dr_a.post(
                        f"/api/v1/alerts/{alert[PATIENT_A]}/snooze",
                        json={"until": "2030-01-01T00:00:00"},
                    ),
                    400,
                ),
                "bad parameter": (
                    await dr_a.put(
                        f"/api/v1/patients/{PATIENT_A}/overrides/heart_rate.nonsense",
                        json={"value": 1},
                    ),
                    400,
                ),
                "foreign action": (
                    await dr_a.post(f"/api/v1/alerts/{alert[PATIENT_B]}/acknowledge"),
                    404,
                ),
            }
            for what, (response, status) in refused.items():
                assert response.status_code == status, (what, response.text)
                assert response.json()["error"], what

            # The lifecycle through the API.
            acked = await dr_a.post(f"/api/v1/alerts/{alert[PATIENT_A]}/acknowledge")
            assert acked.json()["status"] == "acknowledged"
            assert acked.json()["acknowledged_by"] == "dr-a"
            escalated = await dr_a.post(
                f"/api/v1/alerts/{alert[PATIENT_A]}/escalate", json={"note": "to the physician"}
            )
            assert escalated.json()["severity"] == "red"
            resolved = await dr_a.post(
                f"/api/v1/alerts/{alert[PATIENT_A]}/resolve", json={"note": "called, fine"}
            )
            assert resolved.json()["status"] == "resolved"
            again = await dr_a.post(f"/api/v1/alerts/{alert[PATIENT_A]}/resolve", json={})
            assert again.status_code == 409

            patients = (await dr_a.get("/api/v1/patients")).json()
            assert [p["patient_id"] for p in patients] == [PATIENT_A]
            assert patients[0]["devices"] == [
                {"device_id": f"oxi-{PATIENT_A}", "device_type": "pulse_oximeter"}
            ]
            assert patients[0]["last_transmission"] is not None
            assert patients[0]["adherence_7d"] == pytest.approx(1 / 7, abs=0.001)

            lines = (await dr_a.get(f"/api/v1/patients/{PATIENT_A}/thresholds")).json()
            red_heart_rate = [
                (line["direction"], line["value"])
                for line in lines
                if line["kind"] == "heart_rate" and line["severity"] == "red"
            ]
            assert red_heart_rate == [("below", 40), ("above", 131)]
            changed = await dr_a.put(
                f"/api/v1/patients/{PATIENT_A}/overrides/heart_rate.red_at_or_above",
                json={"value": 150, "note": "athlete"},
            )
            assert [(o["parameter"], o["value"]) for o in changed.json()] == [
                ("heart_rate.red_at_or_above", 150)
            ]
            lines = (await dr_a.get(f"/api/v1/patients/{PATIENT_A}/thresholds")).json()
            assert {
                "kind": "heart_rate",
                "rule_id": "heart_rate",
                "parameter": "red_at_or_above",
                "value": 150,
                "severity": "red",
                "direction": "above",
            } in lines

            assert (await nobody.get("/metrics")).status_code == 404  # on its own port
            metrics = await api.metrics()
            assert 'telemon_alerts_time_to_acknowledge_seconds_count{severity="red"} 1.0' in metrics
            assert 'telemon_alerts_time_to_resolve_seconds_count{severity="red"} 1.0' in metrics
            openapi = (await nobody.get("/openapi.json")).json()
            assert {"/api/v1/alerts", "/api/v1/events", "/api/v1/patients/{patient_id}"} <= set(
                openapi["paths"]
            )

    # Every request left an audit record, refusals included, with who and which patient.
    async with stack.connection() as conn:
        audit = await query_audit(conn)
    printed = await run_cli(stack, "audit", "--patient", PATIENT_A)
    assert [json.loads(line)["patient_id"] for line in printed.splitlines()] == [
        r["patient_id"] for r in audit if r["patient_id"] == PATIENT_A
    ]
    by_status: dict[int, list[dict[str, Any]]] = {}
    for record in audit:
        by_status.setdefault(int(record["http_status"]), []).append(record)  # type: ignore[call-overload]
    assert len(by_status[401]) == 4
    assert all(r["agent"] is None and r["outcome"] == 4 for r in by_status[401])
    foreign = [r for r in by_status[404] if r["entity"] == f"GET /api/v1/patients/{PATIENT_B}"]
    assert [r["agent"] for r in foreign] == ["dr-a"]
    # The refused alert of another team is recorded with its patient (the owner's trigger).
    foreign_alert = [
        r for r in by_status[404] if r["entity"] == f"GET /api/v1/alerts/{alert[PATIENT_B]}"
    ]
    assert [r["patient_id"] for r in foreign_alert] == [PATIENT_B]
    reads = [r for r in audit if r["subtype"] == "alert.read" and r["http_status"] == 200]
    assert reads[0]["patient_id"] == PATIENT_A
    assert reads[0]["network_address"] == "127.0.0.1"
    assert {r["subtype"] for r in audit} >= {
        "alert.search",
        "alert.acknowledge",
        "alert.escalate",
        "alert.resolve",
        "patient.search",
        "override.set",
        "authenticate",
    }
    assert all(r["source"] == "telemon-api" for r in audit)


async def test_row_level_security_as_the_application_role(stack: Stack) -> None:
    await two_teams(stack)
    async with stack.ingest():
        alert = await red_alerts(stack)
    assert stack.settings.database_url is not None
    pool = await create_pool(
        stack.settings.database_url, stack.settings.database_schema, 2, role=API_ROLE
    )
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == API_ROLE
            assert await conn.fetchval("SELECT count(*) FROM patients") == 0  # nobody set
            async with conn.transaction():
                await conn.execute("SELECT set_config('telemon.clinician', 'dr-b', true)")
                visible = {
                    "patients": await conn.fetch("SELECT patient_id FROM patients"),
                    "alerts": await conn.fetch("SELECT alert_id FROM alerts"),
                    "readings": await conn.fetch("SELECT patient_key FROM readings"),
                    "events": await conn.fetch("SELECT alert_id FROM alert_events"),
                }
                assert [r["patient_id"] for r in visible["patients"]] == [PATIENT_B]
                assert alert[PATIENT_B] in [r["alert_id"] for r in visible["alerts"]]
                assert len(visible["alerts"]) == 2
                assert len(visible["readings"]) == 1
                assert len(visible["events"]) == 2
                updated = await conn.execute(
                    "UPDATE alerts SET status = 'resolved' WHERE alert_id = $1", alert[PATIENT_A]
                )
                assert updated == "UPDATE 0"
                # Every team's open alerts are counted (no patient named): 2 red, 2 orange.
                board = await conn.fetch("SELECT * FROM open_alert_board() ORDER BY severity")
                assert [(r["severity"], r["open_alerts"]) for r in board] == [(2, 2), (3, 2)]
            with pytest.raises(asyncpg.InsufficientPrivilegeError):  # one answer: 404
                await conn.fetchval("SELECT patient_exists($1)", PATIENT_A)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM audit_events")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM readings")
    finally:
        await pool.close()


async def sse_events(
    client: httpx.AsyncClient, count: int, **headers: str
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The first `count` alert events of a new stream: (id, event)."""
    seen = 0
    async with client.stream("GET", "/api/v1/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.strip()
                continue
            if fields.get("event") == "alert":
                yield fields["id"], json.loads(fields["data"])
                seen += 1
                if seen == count:
                    return
            fields = {}


async def first(events: AsyncIterator[tuple[str, dict[str, Any]]]) -> list[tuple[str, Any]]:
    return [e async for e in events]


async def test_live_feed_resumes_without_gap_or_repeat(stack: Stack, tmp_path: Path) -> None:
    await two_teams(stack)
    async with (
        stack.ingest(),
        running_api(stack, tmp_path / "dev.pem") as api,
        api.client("dr-a") as dr_a,
        api.client("dr-b") as dr_b,
    ):
        start = (await dr_a.get("/api/v1/alerts")).json()["feed_position"]
        reading_a = asyncio.create_task(first(sse_events(dr_a, 2, **{"Last-Event-ID": start})))
        reading_b = asyncio.create_task(first(sse_events(dr_b, 2, **{"Last-Event-ID": start})))
        alert = await red_alerts(stack)
        raised = await asyncio.wait_for(reading_a, 20)
        assert [e["type"] for _, e in raised] == ["raised", "raised"]
        # dr-a never sees team B's patient, nor dr-b team A's.
        assert {e["alert"]["patient_id"] for _, e in raised} == {PATIENT_A}
        other = await asyncio.wait_for(reading_b, 20)
        assert {e["alert"]["patient_id"] for _, e in other} == {PATIENT_B}
        seen_id = raised[-1][0]

        # Disconnected; meanwhile three things happen; resuming gives exactly those.
        await dr_a.post(f"/api/v1/alerts/{alert[PATIENT_A]}/acknowledge")
        until = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        await dr_a.post(f"/api/v1/alerts/{alert[PATIENT_A]}/snooze", json={"until": until})
        await dr_a.post(f"/api/v1/alerts/{alert[PATIENT_A]}/resolve", json={"note": "ok"})
        resumed = await asyncio.wait_for(
            first(sse_events(dr_a, 3, **{"Last-Event-ID": seen_id})), 20
        )
        assert [e["type"] for _, e in resumed] == ["acknowledged", "snoozed", "resolved"]
        positions = [FeedPosition.parse(i) for i, _ in resumed]
        assert positions == sorted(positions)
        assert FeedPosition.parse(seen_id) < positions[0]

        bad = await dr_a.get("/api/v1/events", headers={"Last-Event-ID": "nonsense"})
        assert bad.status_code == 400
        metrics = await api.metrics()
        assert "telemon_feed_events_sent_total 7.0" in metrics  # 2 + 2 raised, then 3
        assert 'telemon_api_refused_total{status="400"} 1.0' in metrics

        async def streams_closed() -> bool:
            return "telemon_feed_clients 0.0" in await api.metrics()

        await eventually(streams_closed, 10, "the closed streams to be counted out")


async def test_feed_holds_back_events_until_older_transactions_end(stack: Stack) -> None:
    """Ids are allotted before commit: an event committed later with a smaller id must not
    be skipped by a client already past a larger one."""
    await two_teams(stack)
    async with stack.ingest():
        alert = await red_alerts(stack)
    db = await stack.db()
    async with db.acquire() as reader:
        start = FeedPosition(0, 0)
        before = await events_after(reader, start)
        start = before[-1][0]
        async with db.acquire() as slow, db.acquire() as quick:
            transaction = slow.transaction()
            await transaction.start()
            await acknowledge(slow, alert[PATIENT_A], "dr-a")  # smaller id, not committed
            await acknowledge(quick, alert[PATIENT_B], "dr-b")  # larger id, committed
            assert await events_after(reader, start) == []  # held back behind `slow`
            await transaction.commit()
        later = await events_after(reader, start)
    assert [e["alert"]["patient_id"] for _, e in later] == [PATIENT_A, PATIENT_B]  # type: ignore[index]
