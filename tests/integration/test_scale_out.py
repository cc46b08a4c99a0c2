"""Scale-out: three ingest processes in one group on a 12-partition topic, stopped and
started under load; the oracle's invariants hold and each patient's alert state too."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ingest.service import prepare_storage
from tests.oracle import CommitWatch, OracleProducer, check
from tests.support import IngestProcess, Stack


async def test_three_members_on_twelve_partitions(stack: Stack, tmp_path: Path) -> None:
    settings = stack.settings.model_copy(
        update={
            "readings_topic": f"{stack.settings.readings_topic}12",
            "consumer_group": f"{stack.settings.consumer_group}12",
            "topic_partitions": 12,
        }
    )
    await prepare_storage(settings)
    wide = Stack(settings)
    try:
        producer = OracleProducer(wide, devices=240, low_every=50, start_ago_s=600)
        await producer.enroll()
        members = [IngestProcess(wide, tmp_path / f"m{i}.log") for i in range(3)]
        async with CommitWatch(wide).running():
            producing = asyncio.create_task(producer.paced(36_000, per_second=2_000))
            for member in members:
                await member.wait_ready()
            for i in range(3):  # each member in turn: stopped, then a new one started
                await asyncio.sleep(2)
                members[i].terminate()
                assert await asyncio.to_thread(members[i].wait, 40) == 0
                members[i] = IngestProcess(wide, tmp_path / f"m{i}-again.log")
                await members[i].wait_ready()
            await producing
            await wide.wait_drained(180)
            for member in members:
                member.terminate()
                assert await asyncio.to_thread(member.wait, 40) == 0
        await check(wide, producer)

        # Each patient who sent a low SpO2 has its SpO2 findings, each raised once, in one
        # clinical episode.
        low = {
            a.device_id.removeprefix("oxi-")
            for a in producer.acknowledged
            if producer.is_low(a.seq)
        }
        assert len(low) == 240  # 150 readings per device, every 50th low
        rows = await (await wide.db()).fetch(
            "SELECT p.patient_id, f.rule_id, count(*), count(DISTINCT f.episode_id) AS episodes "
            "FROM findings f JOIN patients p USING (patient_key) "
            "WHERE f.explanation -> 'kinds' ? 'spo2' GROUP BY 1, 2"
        )
        assert {r["patient_id"] for r in rows} == low
        assert all(r["count"] == r["episodes"] == 1 for r in rows), [
            dict(r) for r in rows if r["count"] > 1
        ]
    finally:
        await wide.close()
