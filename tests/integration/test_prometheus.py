"""A real Prometheus (Debian's, installed by `make test`) scrapes a running telemon ingest;
the dashboard's throughput query returns the rate actually produced."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from ingest.platform import die_with_parent, free_port, make_producer
from tests.records import message, reading
from tests.support import Stack, eventually

RATE = 250  # readings per second
SECONDS = 24
THROUGHPUT = "sum(rate(telemon_ingest_readings_stored_total[10s]))"  # as the dashboard's


async def produce_steadily(stack: Stack, patients: list[str]) -> None:
    """RATE single-reading messages per second for SECONDS, all distinct and valid (one
    reading per patient and second of the past hour)."""
    producer = make_producer(stack.settings, linger_ms=5)
    await producer.start()
    start = datetime.now(UTC) - timedelta(hours=1)
    try:
        began = time.monotonic()
        for tick in range(SECONDS * 10):
            for i in range(RATE // 10):
                n = tick * (RATE // 10) + i
                patient = patients[n % len(patients)]
                at = (start + timedelta(seconds=n // len(patients))).isoformat()
                body = message(reading("spo2", 97, "%", at), patient=patient, device=f"d-{patient}")
                await producer.send(
                    stack.settings.readings_topic, json.dumps(body).encode(), patient.encode()
                )
            await asyncio.sleep(max(0.0, began + (tick + 1) / 10 - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()


async def test_prometheus_sees_the_produced_throughput(stack: Stack, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make test` installs it (Debian package prometheus)"
    patients = [f"p-prom-{i}" for i in range(50)]
    await stack.enroll([(p, f"d-{p}") for p in patients])
    async with stack.ingest() as ingest:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: telemon-ingest\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{ingest.port}']}}]\n"
        )
        port = free_port()
        server = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=lambda: die_with_parent(signal.SIGKILL),
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as prometheus:

                async def scraping() -> bool:
                    try:
                        response = await prometheus.get("/api/v1/targets")
                    except httpx.TransportError:
                        return False
                    if response.status_code != 200:  # 503 while Prometheus starts
                        return False
                    active = response.json()["data"]["activeTargets"]
                    return any(t["health"] == "up" for t in active)

                await eventually(scraping, 30, "Prometheus to scrape telemon")
                producing = asyncio.create_task(produce_steadily(stack, patients))
                await asyncio.sleep(SECONDS - 4)  # in the steady middle of the run
                answer = (
                    await prometheus.get("/api/v1/query", params={"query": THROUGHPUT})
                ).json()
                await producing
        finally:
            server.terminate()
            await asyncio.wait_for(server.wait(), 10)
    (result,) = answer["data"]["result"]
    measured = float(result["value"][1])
    assert abs(measured - RATE) < 0.2 * RATE, f"Prometheus says {measured:.0f}/s, sent {RATE}/s"
