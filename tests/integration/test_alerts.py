"""The alert engine inside the pipeline, for real: findings and episodes, overrides,
clinicians' actions, the alerts topic, missing-data sweeps, restarts, full replays and rule
replays."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts.actions import (
    EpisodeActionError,
    acknowledge,
    remove_override,
    resolve,
    set_override,
    snooze,
)
from alerts.model import Disposition
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


async def findings_of(stack: Stack, patient: str, rule: str) -> list[Any]:
    return list(
        await (await stack.db()).fetch(
            "SELECT f.* FROM findings f JOIN patients USING (patient_key) "
            "WHERE patient_id = $1 AND rule_id = $2 ORDER BY finding_id",
            patient,
            rule,
        )
    )


async def episodes_of(stack: Stack, patient: str) -> list[Any]:
    return list(
        await (await stack.db()).fetch(
            "SELECT e.* FROM episodes e JOIN patients USING (patient_key) "
            "WHERE patient_id = $1 ORDER BY episode_id",
            patient,
        )
    )


async def event_types(stack: Stack, episode_id: int) -> list[str]:
    rows = await (await stack.db()).fetch(
        "SELECT type FROM episode_events WHERE episode_id = $1 ORDER BY event_id", episode_id
    )
    return [r["type"] for r in rows]


async def test_episode_lifecycle_overrides_actions_and_topic(stack: Stack, tmp_path: Path) -> None:
    """A patient's findings make one episode: raised, escalated by a more severe firing (the
    NEWS2 finding the same reading raised joins it), acknowledged, snoozed, resolved with a
    disposition; each event once on the alerts topic; restarts and replays add nothing."""
    await stack.enroll([("p-1", "oxi-p-1"), ("p-2", "oxi-p-2")])
    db = await stack.db()
    async with stack.ingest(alert_programmes_file=sweeping_every_second(tmp_path)):
        # Orange, then red (escalates the same episode), then orange twice: a repeat within
        # 15 minutes of event time is not even sent to the lifecycle, a later one is absorbed.
        await stack.produce([heart_rate("p-1", 115, 40)])
        await eventually(lambda: _count(episodes_of(stack, "p-1"), 1), what="raise")
        # A back-filled reading two days old is stored but raises nothing.
        await stack.produce([heart_rate("p-2", 140, 2 * 24 * 60)])
        await stack.produce([heart_rate("p-1", 135, 35)])
        await eventually(lambda: _red(stack, "p-1"), what="escalation")
        await stack.produce([heart_rate("p-1", 115, 33)])
        await stack.produce([heart_rate("p-1", 115, 15)])
        await stack.wait_drained()
        (episode,) = await episodes_of(stack, "p-1")
        assert (episode["job"], episode["status"], episode["severity"]) == ("clinical", "open", 3)
        (rate,) = await findings_of(stack, "p-1", "heart_rate")
        assert (rate["status"], rate["severity"], rate["fire_count"]) == ("open", 3, 3)
        explanation = json.loads(rate["explanation"])
        assert (explanation["rule"], explanation["values"]["value"]) == ("heart_rate", 135)
        # 135/min alone is a NEWS2 parameter at 3: an orange NEWS2 finding, same episode.
        (news2,) = await findings_of(stack, "p-1", "news2")
        assert (news2["episode_id"], news2["severity"]) == (episode["episode_id"], 2)
        assert await event_types(stack, episode["episode_id"]) == ["raised", "escalated"]
        assert await episodes_of(stack, "p-2") == []

        # A clinician raises p-2's orange threshold: the running engine applies it.
        async with stack.connection() as conn:
            await set_override(conn, "p-2", "heart_rate.orange_at_or_above", 130, "dr-a", "AF")
        await asyncio.sleep(OVERRIDE_POLL_S + 2)
        await stack.produce([heart_rate("p-2", 125, 2)])
        await stack.wait_drained()
        assert await episodes_of(stack, "p-2") == []

        # Acknowledged, snoozed, then resolved with what was done (once); a new firing
        # within the red cool-down is dropped.
        async with stack.connection() as conn:
            await acknowledge(conn, episode["episode_id"], "nurse-b")
            await snooze(conn, episode["episode_id"], "nurse-b", NOW + timedelta(hours=2))
            snoozed = await conn.fetchval(
                "SELECT snoozed_until FROM episodes WHERE episode_id = $1", episode["episode_id"]
            )
            assert snoozed == NOW + timedelta(hours=2)
            await resolve(
                conn, episode["episode_id"], "dr-a", Disposition.TREATMENT_ADJUSTED, "rate control"
            )
            with pytest.raises(EpisodeActionError, match="already resolved"):
                await resolve(conn, episode["episode_id"], "dr-a", Disposition.ADVICE_GIVEN, None)
            with pytest.raises(EpisodeActionError, match="recorded by telemon"):
                await resolve(conn, episode["episode_id"], "dr-a", Disposition.DATA_RECEIVED, None)
        await stack.produce([heart_rate("p-1", 135, 1)])
        await stack.wait_drained()
        (episode,) = await episodes_of(stack, "p-1")
        assert (episode["status"], episode["resolved_by"]) == ("resolved", "dr-a")
        assert (episode["disposition"], episode["note"]) == ("treatment_adjusted", "rate control")
        assert {f["status"] for f in await findings_of(stack, "p-1", "heart_rate")} == {"resolved"}
        assert await event_types(stack, episode["episode_id"]) == [
            "raised",
            "escalated",
            "acknowledged",
            "snoozed",
            "resolved",
        ]
        # Every event reaches the alerts topic once, after it is durable.
        await eventually(lambda: _all_published(db), what="episode events published")
    published = [json.loads(r.value) for r in await stack.read_topic(stack.settings.alerts_topic)]
    events = await db.fetch("SELECT event_id FROM episode_events ORDER BY event_id")
    assert sorted(e["event_id"] for e in published) == [e["event_id"] for e in events]
    last = max(published, key=lambda e: e["event_id"])
    assert last["type"] == "resolved"
    assert last["episode"]["disposition"] == "treatment_adjusted"
    assert [f["rule_id"] for f in last["episode"]["findings"]] == ["heart_rate", "news2"]

    # A restart (state rebuilt from PostgreSQL) and a full replay from the earliest offset
    # under a new consumer group: nothing new is stored, raised or published.
    findings_before = await db.fetchval("SELECT count(*) FROM findings")
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
    assert await db.fetchval("SELECT count(*) FROM findings") == findings_before
    assert await db.fetchval("SELECT count(*) FROM episode_events") == events_before
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
    assert await db.fetchval("SELECT count(*) FROM findings") == findings_before

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
            lambda: _count(findings_of(stack, "p-hf", "hf_weight_missing"), 1),
            30,
            "missing-weight finding",
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
        assert len(await findings_of(stack, "p-hf", "hf_weight_missing")) == 1
        # The data episode holds what else is missing (the questionnaires): it stays open,
        # updated, until the last finding is answered.
        (episode,) = await episodes_of(stack, "p-hf")
        waiting = await (await stack.db()).fetch(
            "SELECT rule_id FROM findings WHERE episode_id = $1 AND status = 'open'",
            episode["episode_id"],
        )
        assert (episode["job"], episode["status"]) == ("data", "open")
        assert {r["rule_id"] for r in waiting} == {"questionnaire_missed"}
        assert "updated" in await event_types(stack, episode["episode_id"])
        answer = message(
            reading("dyspnoea", 0, "{grade}", datetime.now(UTC).isoformat()),
            patient="p-hf",
            device="scale-1",
        )
        await stack.produce([(b"p-hf", json.dumps(answer).encode())])
        await stack.wait_drained()
        await eventually(lambda: _episode_resolved(stack, "p-hf"), what="the data episode done")
        (episode,) = await episodes_of(stack, "p-hf")
        assert (episode["resolved_by"], episode["disposition"]) == ("telemon", "data_received")


async def _count(rows: Any, n: int) -> bool:
    return len(await rows) == n


async def _red(stack: Stack, patient: str) -> bool:
    rows = await episodes_of(stack, patient)
    return bool(rows) and rows[0]["severity"] == 3


async def _all_published(db: Any) -> bool:
    return bool(
        await db.fetchval("SELECT count(*) = 0 FROM episode_events WHERE published_at IS NULL")
    )


async def _episode_resolved(stack: Stack, patient: str) -> bool:
    return all(e["status"] == "resolved" for e in await episodes_of(stack, patient))


async def _resolved_by_data(stack: Stack) -> bool:
    (finding,) = await findings_of(stack, "p-hf", "hf_weight_missing")
    return bool(finding["status"] == "resolved" and finding["resolution"] == "data received")


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1e6)
