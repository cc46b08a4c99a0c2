"""Feed latency: device time -> alert visible on a clinician's live feed (SSE).

    python -m loadtests.feed_latency --seconds 30

telemon ingest and telemon api run as their own processes on the embedded
stack (or TELEMON_DATABASE_URL / _KAFKA_BOOTSTRAP); a producer process sends
SpO2 readings of COVID patients measured "now" at half the peak ingest rate
(measured first, in the same run: telemon draining a backlog of 300k
messages; or --rate messages/s), one in 997 low enough to raise a
red alert, so deteriorating patients keep appearing among the others. A
clinician whose care team follows every patient listens to /api/v1/events;
for each alert raised, latency = the time the event is read off the stream
minus the device time of the reading that raised it.

Target (issue 6): p99 under 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from ingest.api.auth import DevIssuer
from ingest.api.teams import add_every_patient, add_member, create_team
from ingest.platform import Settings, connect, free_port
from loadtests.common import benchmark_stack, fresh, http_port, process, telemon_ingest
from loadtests.ingest_benchmark import PATIENTS, drain_rate, produce_at_rate

TARGET_P99_S = 2.0


def _produce(settings: Settings, rate: float, seconds: float) -> None:
    asyncio.run(produce_at_rate(settings, rate, seconds))


async def listen(
    url: str, token: str, seconds: float, latencies: list[tuple[float, float]]
) -> None:
    """Read the feed for `seconds`; per episode raised, (device time of its first finding
    -> on the feed, of which event written -> on the feed)."""
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + seconds
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=seconds + 30) as client,
        client.stream("GET", "/api/v1/events") as response,
    ):
        response.raise_for_status()
        data = None
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                data = line[5:]
            elif not line and data is not None:
                event = json.loads(data)
                data = None
                if isinstance(event, dict) and event["type"] == "raised":
                    fired = datetime.fromisoformat(event["episode"]["first_fired_at"])
                    written = datetime.fromisoformat(event["at"])
                    now = time.time()
                    latencies.append((now - fired.timestamp(), now - written.timestamp()))
            if time.monotonic() > deadline:
                return


async def run(base: Settings, rate: float, seconds: float) -> list[tuple[float, float]]:
    settings = await fresh(base, "feed", PATIENTS)
    assert settings.database_url is not None
    conn = await connect(settings.database_url, settings.database_schema)
    try:
        await create_team(conn, "all", "Every patient")
        await add_member(conn, "all", "dr.bench")
        await add_every_patient(conn, "all")
    finally:
        await conn.close()
    with tempfile.TemporaryDirectory() as keys:
        api_port = free_port()
        api_settings = settings.model_copy(
            update={
                "api_port": api_port,
                "api_metrics_port": free_port(),  # not 8001: another API may be running
                "dev_issuer_key_file": Path(keys) / "dev.pem",
            }
        )
        assert api_settings.token_issuer is not None
        token = DevIssuer(api_settings.token_issuer, Path(keys) / "dev.pem").token(
            "dr.bench", None, settings.oidc_audience
        )
        api_command = ["-m", "ingest.cli", "api"]
        async with (
            process(telemon_ingest(), settings, http_port=http_port()),
            process(api_command, api_settings, api_port=api_port),
        ):
            await asyncio.sleep(8)  # group join, API start
            url = f"http://127.0.0.1:{api_port}"
            latencies: list[tuple[float, float]] = []
            listening = asyncio.create_task(listen(url, token, seconds + 5, latencies))
            producer = multiprocessing.get_context("spawn").Process(
                target=_produce, args=(settings, rate, seconds)
            )
            producer.start()
            await asyncio.to_thread(producer.join)
            await listening
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate", type=float, default=0, help="messages/s; default: half the measured peak"
    )
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    with benchmark_stack() as base:
        if not args.rate:
            peak = asyncio.run(drain_rate(base, "telemon", 300_000))
            args.rate = peak / 2
            print(f"peak: {peak:.0f} msg/s (rules on); the feed is measured at half", flush=True)
        latencies = asyncio.run(run(base, args.rate, args.seconds))
    if len(latencies) < 20:
        raise SystemExit(f"only {len(latencies)} alerts seen: too few to measure")
    total, feed = zip(*latencies, strict=True)
    p50, p99 = statistics.median(total), statistics.quantiles(total, n=100)[98]
    verdict = "OK" if p99 < TARGET_P99_S else "MISSED"
    print(
        f"device time -> alert on the live feed at {args.rate:.0f} msg/s: {len(total)} "
        f"alerts, p50 {p50:.3f} s, p99 {p99:.3f} s, max {max(total):.3f} s "
        f"(target p99 < {TARGET_P99_S} s) {verdict}\n"
        f"  of which event written -> on the feed: p50 {statistics.median(feed):.3f} s, "
        f"p99 {statistics.quantiles(feed, n=100)[98]:.3f} s"
    )


if __name__ == "__main__":
    main()
