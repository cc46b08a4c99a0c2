"""`telemon demo`: the whole stack on this machine, with live progress on the terminal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from prometheus_client import CollectorRegistry

from devices.gateways import GatewayPlan, run_gateways
from ingest.kafka import make_producer
from ingest.pipeline import Totals
from ingest.service import run_ingest
from ingest.settings import Settings

__all__ = ["run_demo"]

log = logging.getLogger("telemon.demo")


async def run_demo(settings: Settings, plan: GatewayPlan, stop: asyncio.Event) -> int:
    assert settings.database_url is not None
    assert settings.kafka_bootstrap is not None
    registry = CollectorRegistry()
    ready = asyncio.Event()
    stop_ingest = asyncio.Event()
    ingest = asyncio.create_task(
        run_ingest(settings, stop_ingest, registry=registry, on_ready=lambda _: ready.set())
    )
    await _first(ready.wait(), ingest)
    host = settings.http_host
    print(
        f"\n  telemon demo is running (Ctrl-C stops everything)\n"
        f"  metrics    http://{host}:{settings.http_port}/metrics\n"
        f"  readiness  http://{host}:{settings.http_port}/readyz\n"
        f"  a second terminal can add load:\n"
        f"    export TELEMON_DATABASE_URL='{settings.database_url}'\n"
        f"    export TELEMON_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}\n"
        f"    export TELEMON_KAFKA_IDEMPOTENT_PRODUCER=false\n"
        f"    .venv/bin/telemon simulate --patients 500 --id-prefix extra --rate 200\n",
        flush=True,
    )
    producer = make_producer(settings)
    await producer.start()
    gateways = asyncio.create_task(
        run_gateways(
            plan,
            dsn=settings.database_url,
            schema=settings.database_schema,
            producer=producer,
            topic=settings.readings_topic,
            stop=stop,
        )
    )
    progress = asyncio.create_task(_show_progress(registry))
    try:
        await _first(stop.wait(), ingest)
    finally:
        stop.set()
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gateways
        await producer.stop()
        stop_ingest.set()
        await ingest
    return 0


async def _first(awaitable: Awaitable[object], ingest: asyncio.Task[Totals]) -> None:
    """Wait for `awaitable`, unless ingest dies first (then raise why)."""
    waiter = asyncio.ensure_future(awaitable)
    await asyncio.wait([waiter, ingest], return_when=asyncio.FIRST_COMPLETED)
    if ingest.done():
        waiter.cancel()
        ingest.result()


async def _show_progress(registry: CollectorRegistry, every_s: float = 2.0) -> None:
    def total(metric: str, **labels: str) -> float:
        """The sum of a counter's samples, over the label values not given."""
        return sum(
            s.value
            for m in registry.collect()
            if m.name == metric
            for s in m.samples
            if s.name.endswith("_total") and labels.items() <= s.labels.items()
        )

    previous = total("telemon_ingest_readings_stored")
    while True:
        await asyncio.sleep(every_s)
        stored = total("telemon_ingest_readings_stored")
        print(
            f"  {(stored - previous) / every_s:8.0f} readings/s  {stored:10.0f} stored  "
            f"{total('telemon_ingest_readings_duplicate'):6.0f} duplicates  "
            f"{total('telemon_ingest_rejected'):6.0f} rejected  "
            f"alerts raised: {total('telemon_alerts_raised', severity='red'):5.0f} red "
            f"{total('telemon_alerts_raised', severity='orange'):5.0f} orange",
            flush=True,
        )
        previous = stored
