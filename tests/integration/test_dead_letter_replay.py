"""Dead letters brought back, for real: parked until the enrolment, replayed through Kafka
by `telemon dead-letters replay`, each stored once, marked once, audited; what the
catalogue still refuses is refused again; a dry run changes nothing."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from alerts.programmes import load_config
from ingest.pipeline.metrics import IngestMetrics
from ingest.pipeline.parking import ParkingLeader
from ingest.pipeline.replays import REPLAY_HEADER
from ingest.platform import EXIT_STATUS, make_producer
from ingest.report import Period, gather_figures
from ingest.report.reimbursement import load_tariffs
from tests.oracle import CommitWatch, OracleProducer, check
from tests.records import message, reading
from tests.support import IngestProcess, Stack, eventually, run_cli, run_cli_refused


def record(patient: str, device: str, *readings: dict[str, Any]) -> tuple[bytes, bytes]:
    body = message(*readings, patient=patient, device=device)
    return patient.encode(), json.dumps(body).encode()


def ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


async def dead_letters(stack: Stack) -> list[Any]:
    return list(await (await stack.db()).fetch("SELECT * FROM dead_letters ORDER BY id"))


async def all_replayed(stack: Stack, ids: list[int]) -> bool:
    done = await (await stack.db()).fetchval(
        "SELECT count(*) FROM dead_letters WHERE id = ANY($1::bigint[]) "
        "AND replayed_at IS NOT NULL",
        ids,
    )
    return bool(done == len(ids))


async def balanced(stack: Stack) -> None:
    """Per offset, consumed = stored + duplicate + dead-lettered: the ledger covers every
    record of the topic, replays included, and its counts are the tables'."""
    db = await stack.db()
    ledger = await db.fetchrow(
        "SELECT sum(messages) AS m, sum(next_offset - first_offset) AS span, "
        "sum(readings_stored) AS s, sum(dead_letters) AS d FROM ingest_ledger"
    )
    assert ledger is not None
    records = await stack.read_topic(stack.settings.readings_topic)
    assert ledger["m"] == ledger["span"] == len(records)
    assert ledger["s"] == await db.fetchval("SELECT count(*) FROM readings")
    assert ledger["d"] == await db.fetchval("SELECT count(*) FROM dead_letters")


async def test_parked_readings_are_stored_once_on_enrolment(stack: Stack) -> None:
    """A gateway sends before the enrolment: parked; `telemon enroll` replays them, each
    stored once; the current reading makes its finding, the two-day-old one only history."""
    current = record("p-1", "oxi-1", reading("heart_rate", 135, "/min", ago(10)))
    old = record("p-1", "oxi-1", reading("heart_rate", 140, "/min", ago(2 * 24 * 60)))
    await stack.produce([current, old, current])  # the gateway sent one twice
    db = await stack.db()
    async with stack.ingest() as ingest:
        await stack.wait_drained()
        parked = await dead_letters(stack)
        assert [d["reason"] for d in parked] == ["unknown_device"] * 3
        assert all(d["parked_until"] == d["rejected_at"] + timedelta(days=7) for d in parked)
        assert {(d["patient_id"], d["device_id"]) for d in parked} == {("p-1", "oxi-1")}
        assert ingest.metric("telemon_ingest_dead_letters_parked_total") == 3
        listed = await run_cli(stack, "dead-letters", "list", "--state", "parked")
        assert "3 dead letters by reason: unknown_device 3" in listed

        await run_cli(
            stack,
            *("enroll", "--patient", "p-1", "--programme", "covid"),
            *("--device", "oxi-1", "--device-type", "pulse_oximeter"),
        )
        ids = [d["id"] for d in parked]
        await eventually(lambda: all_replayed(stack, ids), 30, "the parked dead letters replayed")
        await stack.wait_drained()
        assert await db.fetchval("SELECT count(*) FROM readings") == 2
        outcomes = sorted(d["replay_outcome"] for d in await dead_letters(stack))
        assert outcomes == ["duplicate", "stored", "stored"]
        assert {d["replayed_by"] for d in await dead_letters(stack)} == {"telemon:parking"}
        assert ingest.metric("telemon_ingest_dead_letters_replayed_total", outcome="stored") == 2
        replayed = ingest.metric("telemon_ingest_dead_letters_replayed_total", outcome="duplicate")
        assert replayed == 1

        (finding,) = await db.fetch("SELECT * FROM findings WHERE rule_id = 'heart_rate'")
        assert json.loads(finding["explanation"])["values"]["value"] == 135  # not the old 140
        audit = await db.fetch(
            "SELECT agent, patient_id, detail FROM audit_events "
            "WHERE subtype = 'dead_letters.replay'"
        )
        assert [(a["agent"], a["patient_id"]) for a in audit] == [("telemon:parking", "p-1")]
        assert sorted(json.loads(audit[0]["detail"])["dead_letters"]) == ids

        now = datetime.now(UTC)
        period = Period(now - timedelta(days=3), now + timedelta(days=1))
        async with stack.connection() as conn:
            figures, _ = await gather_figures(
                conn, period, load_config(), load_tariffs(), int(now.timestamp() * 1e6)
            )
        technical = figures["technical"]
        assert technical["dead_letter_replays"] == {
            "dead_lettered": 3,
            "still_dead_lettered": 0,
            "parked": 3,
            "expired": 0,
            "replayed": 3,
            "stored": 2,
            "duplicate": 1,
            "rejected_again": 0,
        }
        (partition,) = technical["reconciliation"]  # one patient: one partition
        assert (partition["offsets_consumed"], partition["unaccounted_offsets"]) == (6, 0)
        assert (partition["readings_stored"], partition["duplicates"]) == (2, 1)
        assert partition["dead_lettered"] == 3

        shown = await run_cli(stack, "dead-letters", "show", str(ids[0]))
        assert "replayed" in shown
        assert "stored      heart_rate 135 /min" in shown
    await balanced(stack)


async def test_a_replay_twice_and_a_live_resend_store_once(stack: Stack) -> None:
    """Two replays of the same dead letters sent before ingest consumes either, and the
    gateway re-sending one of the readings live: each reading is stored once, each dead
    letter marked once; a third replay has nothing left to do."""
    messages = [
        record("p-2", "oxi-2", reading("spo2", 95, "%", ago(30)), reading("spo2", 94, "%", ago(20)))
    ]
    messages.append(record("p-2", "oxi-2", reading("spo2", 93, "%", ago(15))))
    await stack.produce(messages)
    async with stack.ingest(dead_letter_park_window_s=0):  # no parking: replay by hand
        await stack.wait_drained()
    ids = [d["id"] for d in await dead_letters(stack)]
    assert len(ids) == 2
    assert all(d["parked_until"] is None for d in await dead_letters(stack))
    await stack.enroll([("p-2", "oxi-2")])
    for _ in range(2):
        sent = await run_cli(stack, "dead-letters", "replay", "--patient", "p-2", "--no-wait")
        assert "sent 2 records replaying 2 dead letters" in sent
    await stack.produce([messages[1]])  # the gateway again, live
    async with stack.ingest(dead_letter_park_window_s=0) as ingest:
        await stack.wait_drained()
        assert ingest.metric("telemon_ingest_dead_letters_replayed_total", outcome="stored") == 2
        assert ingest.metric("telemon_ingest_readings_duplicate_total") == 4  # 3 + the live one
        again = await run_cli(stack, "dead-letters", "replay", *map(str, ids))
        assert again.count("skipped: already replayed (replayed: stored)") == 2
        assert "nothing to replay" in again
    db = await stack.db()
    assert await db.fetchval("SELECT count(*) FROM readings") == 3
    assert [d["replay_outcome"] for d in await dead_letters(stack)] == ["stored", "stored"]
    assert len(await replay_records(stack)) == 4
    await balanced(stack)


async def test_still_refused_is_refused_again_and_a_dry_run_changes_nothing(
    stack: Stack,
) -> None:
    """A unit the catalogue still refuses, beside a reading that is now storable: the dry
    run says so and changes nothing; the replay stores the one and refuses the other
    again, with its reason, as a dead letter of its own pointing to the first."""
    await stack.enroll([("p-3", "oxi-3")])
    refused = record("p-3", "oxi-3", reading("spo2", 95, "furlong", ago(5)))
    unknown = record("p-3", "oxi-9", reading("spo2", 96, "%", ago(5)))
    await stack.produce([refused, unknown])
    async with stack.ingest(dead_letter_park_window_s=0):
        await stack.wait_drained()
        first, second = await dead_letters(stack)
        await stack.enroll([("p-3", "oxi-9")])
        await eventually(lambda: _published(stack), what="the dead letters on the DLQ topic")

        before = await _snapshot(stack)
        dry = await run_cli(stack, "dead-letters", "replay", "--dry-run", "--patient", "p-3")
        assert f"{first['id']:>8}  would be rejected: unit_not_convertible" in dry
        assert f"{second['id']:>8}  would be stored" in dry
        assert "dry run, nothing changed: 1 rejected, 1 stored" in dry
        assert await _snapshot(stack) == before

        done = await run_cli(stack, "dead-letters", "replay", "--patient", "p-3")
        assert "replayed: 1 rejected, 1 stored" in done
        await stack.wait_drained()
    first, second, born = await dead_letters(stack)
    assert (first["replay_outcome"], first["replay_reason"]) == ("rejected", "unit_not_convertible")
    assert (born["reason"], born["replay_of"], born["replayed_at"]) == (
        "unit_not_convertible",
        first["id"],
        None,
    )
    assert second["replay_outcome"] == "stored"
    assert first["replayed_by"].startswith("operator:")
    await balanced(stack)


async def replay_records(stack: Stack) -> list[ConsumerRecord[bytes, bytes]]:
    records = await stack.read_topic(stack.settings.readings_topic)
    return [r for r in records if any(k == REPLAY_HEADER for k, _ in r.headers)]


async def _published(stack: Stack) -> bool:
    unpublished = "SELECT count(*) FROM dead_letters WHERE published_at IS NULL"
    return bool(await (await stack.db()).fetchval(unpublished) == 0)


async def _snapshot(stack: Stack) -> tuple[Any, ...]:
    db = await stack.db()
    return (
        [tuple(r) for r in await db.fetch("SELECT * FROM dead_letters ORDER BY id")],
        await db.fetchval("SELECT count(*) FROM readings"),
        await db.fetchval("SELECT count(*) FROM audit_events"),
        await stack.end_offsets(),
    )


async def test_kill_minus_9_during_a_replay(stack: Stack, tmp_path: Path) -> None:
    """Half the devices are enrolled after their readings came: the parking leader
    replays them and dies at a failpoint half-way through sending, the next member is
    killed -9 while replays are written, a last one finishes. Every dead letter is
    replayed once, whole; nothing is lost or stored twice (the oracle's I1-I5)."""
    producer = OracleProducer(stack, devices=100, prefix="k")
    await producer.enroll(producer.pairs[:50])
    await producer.send(6_000)
    late = tmp_path / "late.csv"
    late.write_text(
        "patient_id,programme,device_id,device_type\n"
        + "".join(f"{p},covid,{d},pulse_oximeter\n" for p, d in producer.pairs[50:])
    )
    db = await stack.db()
    replayed = "SELECT count(*) FROM dead_letters WHERE replayed_at IS NOT NULL"
    stored_late = "SELECT count(*) FROM readings r JOIN devices d USING (device_key) " + (
        "WHERE d.device_id = ANY($1::text[])"
    )
    late_devices = [d for _, d in producer.pairs[50:]]

    async def whole() -> tuple[int, int]:
        """Replayed dead letters and the late devices' stored readings, in one snapshot."""
        row = await db.fetchrow(f"SELECT ({replayed}) AS r, ({stored_late}) AS s", late_devices)
        assert row is not None
        return row["r"], row["s"]

    async with CommitWatch(stack).running():
        first = IngestProcess(
            stack, tmp_path / "first.log", failpoints="replay_send=0.005", batch_max_messages=500
        )
        await first.wait_ready()
        await stack.wait_drained(120)
        assert await db.fetchval(
            "SELECT count(*) FROM dead_letters WHERE parked_until > now()"
        ) == (3_000)
        await run_cli(stack, "enroll", "--csv", str(late))
        assert await asyncio.to_thread(first.wait, 120) == EXIT_STATUS, first.log
        # Half-way: each dead letter as it was, or replayed with its reading stored.
        done, stored = await whole()
        assert done == stored < 3_000

        second = IngestProcess(stack, tmp_path / "second.log", batch_max_messages=200)
        before = await db.fetchval(replayed)
        await eventually(
            lambda: _more(db, replayed, before), 120, "the second member to replay some"
        )
        await asyncio.sleep(random.Random(5).uniform(0.0, 0.3))
        second.kill()
        done, stored = await whole()
        assert done == stored

        last = IngestProcess(stack, tmp_path / "last.log", batch_max_messages=500)
        try:
            # Ready first: the second member may have replayed everything before it died,
            # and a SIGTERM while Python is still starting ends a process with -15.
            await last.wait_ready()
            await eventually(lambda: _more(db, replayed, 2_999), 120, "every replay")
            await stack.wait_drained(120)
        finally:
            last.terminate()
            assert await asyncio.to_thread(last.wait, 40) == 0
    await check(stack, producer, replays=True)
    outcomes = await db.fetch("SELECT replay_outcome, count(*) FROM dead_letters GROUP BY 1")
    assert sum(r["count"] for r in outcomes) == 3_000  # none rejected again: no new one
    assert await db.fetchval(stored_late, late_devices) == 3_000


async def _more(db: Any, query: str, than: int) -> bool:
    return bool(await db.fetchval(query) > than)


class _Later:
    """The wall clock, `days` ahead."""

    def __init__(self, days: float) -> None:
        self._ahead_ms = int(days * 86_400_000)

    def now_ms(self) -> int:
        return int(datetime.now(UTC).timestamp() * 1000) + self._ahead_ms

    def monotonic(self) -> float:
        return 0.0


async def test_past_its_window_a_parked_dead_letter_stays_one(stack: Stack) -> None:
    """Eight days later the parking leader expires the parked dead letter instead of
    replaying it, though its device is now enrolled: it is a plain dead letter again."""
    await stack.produce([record("p-4", "oxi-4", reading("spo2", 97, "%", ago(3)))])
    async with stack.ingest():
        await stack.wait_drained()
    await stack.enroll([("p-4", "oxi-4")])
    metrics = IngestMetrics(CollectorRegistry())
    leader = ParkingLeader(
        dsn=str(stack.settings.database_url),
        schema=stack.settings.database_schema,
        topic=stack.settings.readings_topic,
        producer=make_producer(stack.settings),  # never started: nothing to send
        clock=_Later(days=8),
        metrics=metrics,
        poll_s=1.0,
    )
    async with stack.connection() as conn:
        assert await leader.look(conn) == 0
        assert await leader.look(conn) == 0  # expired once
    (letter,) = await dead_letters(stack)
    assert letter["park_expired_at"] is not None
    assert letter["replayed_at"] is None
    assert metrics.registry.get_sample_value("telemon_ingest_dead_letters_expired_total") == 1
    assert metrics.registry.get_sample_value("telemon_ingest_parked_dead_letters") == 0
    listed = await run_cli(stack, "dead-letters", "list", "--state", "expired", "--json")
    assert [json.loads(line)["id"] for line in listed.splitlines()] == [letter["id"]]


async def test_bad_requests_get_a_clear_error(stack: Stack) -> None:
    """No traceback: a replay of everything must be asked by filter, an unknown id is
    named, a malformed date is refused by the parser."""
    refusals = [
        (("replay",), 2, "name dead-letter ids or at least one filter"),
        (("show", "99"), 1, "no dead letter 99"),
        (("replay", "98", "99"), 1, "no dead letter 98, 99"),
        (("list", "--from", "yesterday"), 2, "invalid instant value"),
        (("list", "--reason", "bad_luck"), 2, "invalid choice"),
    ]
    for args, code, text in refusals:
        returncode, output = await run_cli_refused(stack, "dead-letters", *args)
        assert (returncode, text in output) == (code, True), output
