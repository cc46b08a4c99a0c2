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


async def red_episodes(stack: Stack) -> dict[str, int]:
    """Both patients' red episodes, opened by the pipeline: patient -> episode id. (Each holds
    two findings: heart rate, red, and NEWS2, orange.)"""
    await stack.produce([heart_rate(PATIENT_A, 140), heart_rate(PATIENT_B, 140)])
    db = await stack.db()

    async def raised() -> bool:
        count: int = await db.fetchval("SELECT count(*) FROM findings")
        return count == 4

    await eventually(raised, 30, "the findings")
    rows = await db.fetch(
        "SELECT p.patient_id, e.episode_id FROM episodes e JOIN patients p USING (patient_key)"
    )
    return {r["patient_id"]: r["episode_id"] for r in rows}


async def test_api_care_teams_errors_and_audit(stack: Stack, tmp_path: Path) -> None:
    await two_teams(stack)
    async with stack.ingest(), running_api(stack, tmp_path / "dev.pem") as api:
        episode = await red_episodes(stack)
        async with api.client("dr-a") as dr_a, api.client(None) as nobody:
            page = (await dr_a.get("/api/v1/worklist?lang=en")).json()
            (row,) = page["rows"]
            assert row["patient"] == {
                "patient_id": PATIENT_A,
                "display_name": None,  # dr-a does not read identities
                "programme": "covid",
                "day_of_follow_up": 0,
            }
            assert (row["episode"]["severity"], row["episode"]["status"]) == ("red", "open")
            assert [
                (f["rule_id"], f["severity"], f["summary"]) for f in row["episode"]["findings"]
            ] == [
                ("heart_rate", "red", "Heart rate 140/min (≥ 131/min)"),
                ("news2", "orange", "NEWS2 3 (1 of 7 parameters)"),
            ]
            assert [(v["kind"], v["label"], v["value"]) for v in row["latest_vitals"]] == [
                ("heart_rate", "Heart rate", 140)
            ]
            assert (page["counts"], page["unacknowledged"]) == (
                {"red": 1, "orange": 0, "info": 0},
                1,
            )
            FeedPosition.parse(page["feed_position"])
            filtered = {
                programme: [
                    r["patient"]["patient_id"]
                    for r in (await dr_a.get(f"/api/v1/worklist?programme={programme}")).json()[
                        "rows"
                    ]
                ]
                for programme in ("covid", "diabetes")
            }
            assert filtered == {"covid": [PATIENT_A], "diabetes": []}
            french = (await dr_a.get(f"/api/v1/episodes/{episode[PATIENT_A]}")).json()
            assert french["findings"][0]["summary"] == "FC 140/min (≥ 131/min)"
            assert french["findings"][0]["title"] == "Fréquence cardiaque"

            # Not authenticated, forged, foreign team, missing, bad parameters: never a 500.
            expired = bearer(api.issuer.token("dr-a", None, api.audience, lifetime_s=-60))
            elsewhere = bearer(api.issuer.token("dr-a", None, "another-service"))
            mine, theirs = episode[PATIENT_A], episode[PATIENT_B]
            refused = {
                "no token": (await nobody.get("/api/v1/worklist"), 401),
                "forged": (
                    await nobody.get("/api/v1/worklist", headers={"Authorization": "Bearer x.y.z"}),
                    401,
                ),
                "expired": (await nobody.get("/api/v1/worklist", headers=expired), 401),
                "other audience": (await nobody.get("/api/v1/worklist", headers=elsewhere), 401),
                # Another team's is answered as what does not exist (no enumeration).
                "foreign episode": (await dr_a.get(f"/api/v1/episodes/{theirs}"), 404),
                "foreign patient": (await dr_a.get(f"/api/v1/patients/{PATIENT_B}"), 404),
                "no episode": (await dr_a.get("/api/v1/episodes/987654"), 404),
                "no patient": (await dr_a.get("/api/v1/patients/p-nobody"), 404),
                "bad severity": (await dr_a.get("/api/v1/worklist?severity=purple"), 400),
                "bad limit": (await dr_a.get("/api/v1/worklist?limit=0"), 400),
                "bad id": (await dr_a.get("/api/v1/episodes/abc"), 400),
                "bad kind": (await dr_a.get(f"/api/v1/patients/{PATIENT_A}/readings?kind=x"), 400),
                "naive time": (
                    await dr_a.post(
                        f"/api/v1/episodes/{mine}/snooze", json={"until": "2030-01-01T00:00:00"}
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
                "a non-disableable rule set never to fire": (
                    await dr_a.put(
                        f"/api/v1/patients/{PATIENT_A}/overrides/spo2_missing.every_days",
                        json={"value": 30},
                    ),
                    400,
                ),
                "a rule the programme does not run": (
                    await dr_a.put(
                        f"/api/v1/patients/{PATIENT_A}/overrides/glucose_missing.every_days",
                        json={"value": 2},
                    ),
                    400,
                ),
                "foreign action": (await dr_a.post(f"/api/v1/episodes/{theirs}/acknowledge"), 404),
                "no disposition": (
                    await dr_a.post(f"/api/v1/episodes/{mine}/resolve", json={}),
                    400,
                ),
                "unknown disposition": (
                    await dr_a.post(
                        f"/api/v1/episodes/{mine}/resolve", json={"disposition": "prayed"}
                    ),
                    400,
                ),
                "telemon's disposition": (
                    await dr_a.post(
                        f"/api/v1/episodes/{mine}/resolve", json={"disposition": "data_received"}
                    ),
                    400,
                ),
                "foreign resolve": (
                    await dr_a.post(
                        f"/api/v1/episodes/{theirs}/resolve", json={"disposition": "artefact"}
                    ),
                    404,
                ),
            }
            for what, (response, status) in refused.items():
                assert response.status_code == status, (what, response.text)
                assert response.json()["error"], what

            # The lifecycle through the API.
            acked = await dr_a.post(f"/api/v1/episodes/{mine}/acknowledge")
            assert acked.json()["status"] == "acknowledged"
            assert acked.json()["acknowledged_by"] == "dr-a"
            escalated = await dr_a.post(
                f"/api/v1/episodes/{mine}/escalate", json={"note": "to the physician"}
            )
            assert (escalated.json()["severity"], escalated.json()["status"]) == ("red", "open")
            resolved = await dr_a.post(
                f"/api/v1/episodes/{mine}/resolve?lang=en",
                json={"disposition": "advice_given", "note": "rest, call back tonight"},
            )
            assert resolved.json()["status"] == "resolved"
            assert resolved.json()["disposition_label"] == "Advice given"
            again = await dr_a.post(
                f"/api/v1/episodes/{mine}/resolve", json={"disposition": "advice_given"}
            )
            assert again.status_code == 409
            history = (await dr_a.get(f"/api/v1/patients/{PATIENT_A}/episodes")).json()
            assert [(e["episode_id"], e["disposition"]) for e in history] == [
                (mine, "advice_given")
            ]
            assert {f["status"] for f in history[0]["findings"]} == {"resolved"}
            assert (await dr_a.get("/api/v1/worklist")).json()["rows"] == []

            patients = (await dr_a.get("/api/v1/patients")).json()
            assert [p["patient_id"] for p in patients] == [PATIENT_A]
            assert patients[0]["devices"] == [
                {"device_id": f"oxi-{PATIENT_A}", "device_type": "pulse_oximeter"}
            ]
            assert patients[0]["last_transmission"] is not None
            assert patients[0]["adherence_7d"] == pytest.approx(1 / 7, abs=0.001)

            lines = (await dr_a.get(f"/api/v1/patients/{PATIENT_A}/thresholds?lang=en")).json()
            red_heart_rate = [
                (line["direction"], line["value"], line["rule_title"])
                for line in lines
                if line["kind"] == "heart_rate" and line["severity"] == "red"
            ]
            assert red_heart_rate == [("below", 40, "Heart rate"), ("above", 131, "Heart rate")]
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
                "rule_title": "Fréquence cardiaque",
                "parameter": "red_at_or_above",
                "value": 150,
                "severity": "red",
                "direction": "above",
            } in lines

            messages = await nobody.get("/api/v1/messages", headers={"Accept-Language": "en-GB"})
            assert messages.json()["disposition"]["advice_given"] == "Advice given"
            assert (await nobody.get("/metrics")).status_code == 404  # on its own port
            metrics = await api.metrics()
            assert (
                'telemon_episodes_time_to_acknowledge_seconds_count{severity="red"} 1.0' in metrics
            )
            assert 'telemon_episodes_time_to_resolve_seconds_count{severity="red"} 1.0' in metrics
            openapi = (await nobody.get("/openapi.json")).json()
            assert {
                "/api/v1/worklist",
                "/api/v1/episodes/{episode_id}",
                "/api/v1/events",
                "/api/v1/patients/{patient_id}",
            } <= set(openapi["paths"])

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
    # The refused episode of another team is recorded with its patient (the owner's trigger).
    foreign_episode = [
        r for r in by_status[404] if r["entity"] == f"GET /api/v1/episodes/{episode[PATIENT_B]}"
    ]
    assert [r["patient_id"] for r in foreign_episode] == [PATIENT_B]
    reads = [r for r in audit if r["subtype"] == "episode.read" and r["http_status"] == 200]
    assert reads[0]["patient_id"] == PATIENT_A
    assert reads[0]["network_address"] == "127.0.0.1"
    assert {r["subtype"] for r in audit} >= {
        "episode.search",
        "episode.acknowledge",
        "episode.escalate",
        "episode.resolve",
        "episode.history",
        "patient.search",
        "override.set",
        "authenticate",
    }
    assert all(r["source"] == "telemon-api" for r in audit)


async def test_row_level_security_as_the_application_role(stack: Stack) -> None:
    await two_teams(stack)
    async with stack.ingest():
        episode = await red_episodes(stack)
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
                    "episodes": await conn.fetch("SELECT episode_id FROM episodes"),
                    "findings": await conn.fetch("SELECT finding_id FROM findings"),
                    "readings": await conn.fetch("SELECT patient_key FROM readings"),
                    "events": await conn.fetch("SELECT episode_id FROM episode_events"),
                }
                assert [r["patient_id"] for r in visible["patients"]] == [PATIENT_B]
                assert [r["episode_id"] for r in visible["episodes"]] == [episode[PATIENT_B]]
                assert len(visible["findings"]) == 2
                assert len(visible["readings"]) == 1
                assert len(visible["events"]) == 1
                updated = await conn.execute(
                    "UPDATE episodes SET status = 'resolved', resolved_at = now() "
                    "WHERE episode_id = $1",
                    episode[PATIENT_A],
                )
                assert updated == "UPDATE 0"
                # Every team's open episodes are counted (no patient named): 2 red.
                board = await conn.fetch("SELECT * FROM open_episode_board() ORDER BY severity")
                assert [(r["severity"], r["open_episodes"]) for r in board] == [(3, 2)]
            with pytest.raises(asyncpg.InsufficientPrivilegeError):  # one answer: 404
                await conn.fetchval("SELECT patient_exists($1)", PATIENT_A)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetchval("SELECT episode_exists($1)", episode[PATIENT_A])
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM audit_events")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM readings")
    finally:
        await pool.close()


async def sse_events(
    client: httpx.AsyncClient, count: int, **headers: str
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The first `count` episode events of a new stream: (id, event)."""
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
            if fields.get("event") == "episode":
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
        start = (await dr_a.get("/api/v1/worklist")).json()["feed_position"]
        reading_a = asyncio.create_task(first(sse_events(dr_a, 1, **{"Last-Event-ID": start})))
        reading_b = asyncio.create_task(first(sse_events(dr_b, 1, **{"Last-Event-ID": start})))
        episode = await red_episodes(stack)
        raised = await asyncio.wait_for(reading_a, 20)
        assert [e["type"] for _, e in raised] == ["raised"]
        # dr-a never sees team B's patient, nor dr-b team A's.
        assert {e["episode"]["patient_id"] for _, e in raised} == {PATIENT_A}
        assert [f["rule_id"] for f in raised[0][1]["episode"]["findings"]] == [
            "heart_rate",
            "news2",
        ]
        other = await asyncio.wait_for(reading_b, 20)
        assert {e["episode"]["patient_id"] for _, e in other} == {PATIENT_B}
        seen_id = raised[-1][0]

        # Disconnected; meanwhile three things happen; resuming gives exactly those.
        mine = episode[PATIENT_A]
        await dr_a.post(f"/api/v1/episodes/{mine}/acknowledge")
        until = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        await dr_a.post(f"/api/v1/episodes/{mine}/snooze", json={"until": until})
        await dr_a.post(f"/api/v1/episodes/{mine}/resolve", json={"disposition": "artefact"})
        resumed = await asyncio.wait_for(
            first(sse_events(dr_a, 3, **{"Last-Event-ID": seen_id})), 20
        )
        assert [e["type"] for _, e in resumed] == ["acknowledged", "snoozed", "resolved"]
        assert resumed[-1][1]["episode"]["disposition"] == "artefact"
        positions = [FeedPosition.parse(i) for i, _ in resumed]
        assert positions == sorted(positions)
        assert FeedPosition.parse(seen_id) < positions[0]

        bad = await dr_a.get("/api/v1/events", headers={"Last-Event-ID": "nonsense"})
        assert bad.status_code == 400
        metrics = await api.metrics()
        assert "telemon_feed_events_sent_total 5.0" in metrics  # 1 + 1 raised, then 3
        assert 'telemon_api_refused_total{status="400"} 1.0' in metrics

        async def streams_closed() -> bool:
            return "telemon_feed_clients 0.0" in await api.metrics()

        await eventually(streams_closed, 10, "the closed streams to be counted out")


async def test_a_stopping_api_ends_its_live_feeds(stack: Stack, tmp_path: Path) -> None:
    """SIGTERM with clinicians following the feed: each stream ends cleanly, without the
    token's "end" (the browser reconnects and resumes), and the API stops, instead of
    waiting for clients that never leave."""
    await two_teams(stack)
    lines: list[str] = []
    listening = asyncio.Event()

    async def follow(client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/api/v1/events") as response:
            async for line in response.aiter_lines():  # raises if the stream is cut off
                lines.append(line)
                listening.set()

    async with running_api(stack, tmp_path / "dev.pem") as api:
        dr_a = api.client("dr-a")
        following = asyncio.create_task(follow(dr_a))
        await asyncio.wait_for(listening.wait(), 20)
    try:  # the API has stopped
        await asyncio.wait_for(following, 20)
    finally:
        await dr_a.aclose()
    assert "event: position" in lines
    assert "event: end" not in lines


async def test_feed_holds_back_events_until_older_transactions_end(stack: Stack) -> None:
    """Ids are allotted before commit: an event committed later with a smaller id must not
    be skipped by a client already past a larger one."""
    await two_teams(stack)
    async with stack.ingest():
        episode = await red_episodes(stack)
    db = await stack.db()
    async with db.acquire() as reader:
        start = FeedPosition(0, 0)
        before = await events_after(reader, start)
        start = before[-1][0]
        async with db.acquire() as slow, db.acquire() as quick:
            transaction = slow.transaction()
            await transaction.start()
            await acknowledge(slow, episode[PATIENT_A], "dr-a")  # smaller id, not committed
            await acknowledge(quick, episode[PATIENT_B], "dr-b")  # larger id, committed
            assert await events_after(reader, start) == []  # held back behind `slow`
            await transaction.commit()
        later = await events_after(reader, start)
    assert [e["episode"]["patient_id"] for _, e in later] == [PATIENT_A, PATIENT_B]
