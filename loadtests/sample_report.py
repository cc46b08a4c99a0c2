"""A sample evidence report from the simulator, in one command:

    python -m loadtests.sample_report --patients 300 --days 75 --out report-sample

Starts the embedded PostgreSQL and broker (or uses TELEMON_DATABASE_URL /
TELEMON_KAFKA_BOOTSTRAP), enrolls a seeded Covidom-like cohort at the start of
its simulated history, sends that history through telemon ingest (alert rules
on), then writes the report of the period, from the start of the history to
now (report.html, .json, .csv). The cohort is seeded: the same command gives
the same patients, readings and alerts, shifted to the day it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from devices.gateways import GatewayPlan, history_start_ms, run_gateways
from devices.simulator import CohortConfig
from ingest.platform import Settings, connect, make_producer
from ingest.report import Period, make_report
from ingest.service import run_ingest
from loadtests.common import benchmark_stack, isolated, measure_drain


async def run(base: Settings, args: argparse.Namespace) -> str:
    settings = await isolated(base, "sample")
    assert settings.database_url is not None
    stop = asyncio.Event()
    ingest = asyncio.create_task(run_ingest(settings, stop, registry=CollectorRegistry()))
    start_ms = history_start_ms(args.days)
    plan = GatewayPlan(
        cohort=CohortConfig(
            patients=args.patients, start_ms=start_ms, days=args.days, seed=args.seed
        )
    )
    producer = make_producer(settings)
    await producer.start()
    try:
        sent = await run_gateways(
            plan,
            dsn=settings.database_url,
            schema=settings.database_schema,
            producer=producer,
            topic=settings.readings_topic,
        )
    finally:
        await producer.stop()
    print(f"simulated {sent.messages} messages; waiting for ingest", flush=True)
    await measure_drain(settings, sent.messages)
    stop.set()
    await ingest
    start = datetime.fromtimestamp(start_ms / 1000, UTC)
    conn = await connect(settings.database_url, settings.database_schema)
    try:
        return await make_report(
            conn,
            settings,
            Period(start, datetime.now(UTC)),
            args.out,
            now_us=int(time.time() * 1e6),
            language=args.language,
        )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument(
        "--days", type=float, default=75, help="a whole calendar month and months 1 and 2"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("report-sample"))
    parser.add_argument("--language", choices=("fr", "en"), default="fr")
    args = parser.parse_args()
    with benchmark_stack() as base:
        digest = asyncio.run(run(base, args))
    print(f"{args.out / 'report.html'}  sha256(report.json) = {digest}")


if __name__ == "__main__":
    main()
