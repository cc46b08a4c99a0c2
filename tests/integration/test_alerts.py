"""The alert engine inside the pipeline, for real: lifecycle, overrides, clinician actions,
the alert topic, missing-data sweeps, restarts, full replays and rule replays."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts.actions import (
    AlertActionError,
    acknowledge,
    remove_override,
    resolve,
    set_override,
    snooze,
)
from alerts.programmes import load_config
from alerts.replay import replay
from alerts.step import OVERRIDE_POLL_S
from devices.registry import DeviceType, Enrollment, Programme, enroll
from tests.records import message, reading
from tests.support import Stack, eventually, run_cli

NOW = datetime.now(UTC).replace(microsecond=0)
DEFAULT_PROGRAMMES = Path(__file__).parents[2] / "alerts" / "programmes.toml"


def heart_rate(patient: str, value: float, minutes_ago: float) -> tuple[bytes, bytes]:
    at = (NOW - timedelta(minutes=minutes_ago)).isoformat()
    body = message(
        reading("heart_rate", value, "/min", at), patient=patient, device=f"oxi-{patient}"
    )
    return patient.encode(), json.dumps(body).encode()


def sweeping_every_second(tmp_path: Path) -> Path:
    text = DEFAULT_PROGRAMMES.read_text()
    path = tmp_path / "programmes.toml"
    path.write_text(text.replace("sweep_interval_seconds = 60", "sweep_interval_seconds = 1"))
    return path


async def alerts_of(stack: Stack, patient: str, rule: str) -> list[Any]:
    return list(
        await (await stack.db()).fetch(
            "SELECT a.* FROM alerts a JOIN patients USING (patient_key) "
            "WHERE patient_id = $1 AND rule_id = $2 ORDER BY alert_id",
            patient,
            rule,
        )
    )


async def event_types(stack: Stack, alert_id: int) -> list[str]:
    rows = await (await stack.db()).fetch(
        "SELECT type FROM alert_events WHERE alert_id = $1 ORDER BY event_id", alert_id
    )
    return [r["type"] for r in rows]


async def test_alert_lifecycle_overrides_actions_and_topic(stack: Stack, tmp_path: Path) -> None:
    await stack.enroll([("p-1", "oxi-p-1"), ("p-2", "oxi-p-2")])
    db = await stack.db()
    async with stack.ingest(alert_programmes_file=sweeping_every_second(tmp_path)):
        # Orange, then red (escalates the same alert), then orange twice: a repeat within
        # 15 minutes of event time is not even sent to the lifecycle, a later one is absorbed.
        await stack.produce([heart_rate("p-1", 115, 40)])
        await eventually(lambda: _count(alerts_of(stack, "p-1", "heart_rate"), 1), what="raise")
        # A back-filled reading two days old is stored but raises nothing.
        await stack.produce([heart_rate("p-2", 140, 2 * 24 * 60)])
        await stack.produce([heart_rate("p-1", 135, 35)])
        await eventually(lambda: _red(stack, "p-1"), what="escalation")
        await stack.produce([heart_rate("p-1", 115, 33)])
        await stack.produce([heart_rate("p-1", 115, 15)])
        await stack.wait_drained()
        (alert,) = await alerts_of(stack, "p-1", "heart_rate")
        assert (alert["status"], alert["severity"], alert["fire_count"]) == ("open", 3, 3)
        explanation = json.loads(alert["explanation"])
        assert (explanation["rule"], explanation["values"]["value"]) == ("heart_rate", 135)
        assert await event_types(stack, alert["alert_id"]) == ["raised", "escalated"]
        assert await alerts_of(stack, "p-2", "heart_rate") == []

        # A clinician raises p-2's orange threshold: the running engine applies it.
        async with stack.connection() as conn:
            await set_override(conn, "p-2", "heart_rate.orange_at_or_above", 130, "dr-a", "AF")
        await asyncio.sleep(OVERRIDE_POLL_S + 2)
        await stack.produce([heart_rate("p-2", 125, 2)])
        await stack.wait_drained()
        assert await alerts_of(stack, "p-2", "heart_rate") == []

        # Acknowledged, snoozed, then resolved (once); a new firing within the red
        # cool-down is dropped.
        async with stack.connection() as conn:
            await acknowledge(conn, alert["alert_id"], "nurse-b")
            await snooze(conn, alert["alert_id"], "nurse-b", NOW + timedelta(hours=2))
            snoozed = await conn.fetchval(
                "SELECT snoozed_until FROM alerts WHERE alert_id = $1", alert["alert_id"]
            )
            assert snoozed == NOW + timedelta(hours=2)
            await resolve(conn, alert["alert_id"], "dr-a", "called, rate controlled")
            with pytest.raises(AlertActionError, match="already resolved"):
                await resolve(conn, alert["alert_id"], "dr-a")
        await stack.produce([heart_rate("p-1", 135, 1)])
        await stack.wait_drained()
        (alert,) = await alerts_of(stack, "p-1", "heart_rate")
        assert (alert["status"], alert["resolved_by"]) == ("resolved", "dr-a")
        assert await event_types(stack, alert["alert_id"]) == [
            "raised",
            "escalated",
            "acknowledged",
            "snoozed",
            "resolved",
        ]
        # Every event reaches telemon.alerts.v1 once, after it is durable.
        await eventually(lambda: _all_published(db), what="alert events published")
    published = [json.loads(r.value) for r in await stack.read_topic(stack.settings.alerts_topic)]
    events = await db.fetch("SELECT event_id FROM alert_events ORDER BY event_id")
    assert sorted(e["event_id"] for e in published) == [e["event_id"] for e in events]

    # A restart (state rebuilt from PostgreSQL) and a full replay from the earliest offset
    # under a new consumer group: nothing new is stored, raised or published.
    alerts_before = await db.fetchval("SELECT count(*) FROM alerts")
    events_before = len(events)
    readings_before = await db.fetchval("SELECT count(*) FROM readings")
    # Every current reading was a NEWS2 scored set (the pulse alone: 2 for 111-130, 3 above;
    # how many sets depends on batching), counted once.
    scores = "SELECT score, sum(sets) AS n FROM alert_scores WHERE rule_id = 'news2' GROUP BY 1"
    scored = {r["score"]: r["n"] for r in await db.fetch(scores)}
    assert set(scored) == {2, 3}
    assert scored[3] >= 2  # 135 twice, in batches of their own

    replayed = dataclasses.replace(
        stack, settings=stack.settings.model_copy(update={"consumer_group": "replay"})
    )
    async with replayed.ingest():
        await replayed.wait_drained()
    assert await db.fetchval("SELECT count(*) FROM readings") == readings_before
    assert await db.fetchval("SELECT count(*) FROM alerts") == alerts_before
    assert await db.fetchval("SELECT count(*) FROM alert_events") == events_before
    assert {r["score"]: r["n"] for r in await db.fetch(scores)} == scored

    # Trying a lower orange threshold over the stored history writes nothing and reports
    # one episode per patient: p-1's, and p-2's back-filled 140 (p-2 keeps its override).
    async with stack.connection() as conn:
        report = await replay(
            conn,
            load_config(),
            "heart_rate",
            _us(NOW - timedelta(days=3)),
            _us(NOW + timedelta(minutes=1)),
            parameters={"heart_rate.orange_at_or_above": 100},
        )
    assert sorted((p, e.severity.label) for p, e in report.episodes) == [
        ("p-1", "red"),
        ("p-2", "red"),
    ]
    assert report.readings == 7
    assert await db.fetchval("SELECT count(*) FROM alerts") == alerts_before

    printed = await run_cli(
        stack,
        "rules",
        "replay",
        "--rule=heart_rate",
        f"--from={(NOW - timedelta(days=3)).isoformat()}",
        f"--to={(NOW + timedelta(minutes=1)).isoformat()}",
        "--set=heart_rate.orange_at_or_above=100",
    )
    assert "2 episodes for 2 patients (7 readings replayed, nothing written" in printed

    # Who changed a threshold, and when, is kept; removing it is a change too.
    async with stack.connection() as conn:
        await remove_override(conn, "p-2", "heart_rate.orange_at_or_above", "dr-c")
    history = await db.fetch(
        "SELECT value, changed_by, note, changed_at IS NOT NULL AS dated "
        "FROM threshold_override_history ORDER BY id"
    )
    assert [tuple(r) for r in history] == [(130, "dr-a", "AF", True), (None, "dr-c", None, True)]
    assert await db.fetchval("SELECT count(*) FROM threshold_overrides") == 0


async def test_missing_weight_is_swept_and_resolved_by_data(stack: Stack, tmp_path: Path) -> None:
    async with stack.connection() as conn:
        await enroll(
            conn,
            [
                Enrollment(
                    patient_id="p-hf",
                    programme=Programme.HEART_FAILURE,
                    device_id="scale-1",
                    device_type=DeviceType.SCALE,
                )
            ],
        )
        await conn.execute("UPDATE patients SET enrolled_at = now() - interval '4 days'")
    async with stack.ingest(alert_programmes_file=sweeping_every_second(tmp_path)):
        await eventually(
            lambda: _count(alerts_of(stack, "p-hf", "hf_weight_missing"), 1),
            30,
            "missing-weight alert",
        )
        body = message(
            reading("body_weight", 81.2, "kg", datetime.now(UTC).isoformat()),
            patient="p-hf",
            device="scale-1",
        )
        await stack.produce([(b"p-hf", json.dumps(body).encode())])
        await stack.wait_drained()
        await eventually(lambda: _resolved_by_data(stack), what="resolved by the weight")
        await asyncio.sleep(2)  # sweeps go on: the weighed patient raises nothing new
        assert len(await alerts_of(stack, "p-hf", "hf_weight_missing")) == 1


async def _count(rows: Any, n: int) -> bool:
    return len(await rows) == n


async def _red(stack: Stack, patient: str) -> bool:
    rows = await alerts_of(stack, patient, "heart_rate")
    return bool(rows) and rows[0]["severity"] == 3


async def _all_published(db: Any) -> bool:
    return bool(
        await db.fetchval("SELECT count(*) = 0 FROM alert_events WHERE published_at IS NULL")
    )


async def _resolved_by_data(stack: Stack) -> bool:
    (alert,) = await alerts_of(stack, "p-hf", "hf_weight_missing")
    return bool(alert["status"] == "resolved" and alert["resolution"] == "data received")


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1e6)
