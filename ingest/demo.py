"""`telemon demo`: the whole stack on this machine, with live progress on the terminal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from devices.gateways import GatewayPlan, run_gateways
from ingest.api.auth import DevIssuer
from ingest.api.server import run_api
from ingest.api.teams import add_every_patient, add_member, create_team
from ingest.platform import Connection, Settings, connect, make_producer
from ingest.service import prepare_storage, run_ingest

__all__ = ["run_demo"]

log = logging.getLogger("telemon.demo")


DEMO_TEAM = "demo"
DEMO_CLINICIAN = "dr.demo"


async def run_demo(
    settings: Settings, plan: GatewayPlan, stop: asyncio.Event, *, log_file: Path | None = None
) -> int:
    assert settings.database_url is not None
    assert settings.kafka_bootstrap is not None
    with tempfile.TemporaryDirectory(prefix="telemon-demo-") as keys:
        settings = settings.model_copy(
            update={"dev_issuer_key_file": Path(keys) / "dev-issuer.pem"}
        )
        return await _run(settings, plan, stop, log_file)


async def _run(
    settings: Settings, plan: GatewayPlan, stop: asyncio.Event, log_file: Path | None
) -> int:
    assert settings.database_url is not None
    # The demo's PostgreSQL is its own: it logs in as the tables' owner and migrates, then
    # runs ingest and the API as their roles (SET ROLE telemon_ingest, telemon_api), as
    # `telemon migrate` then the services would.
    await prepare_storage(settings)
    registry = CollectorRegistry()
    ready = asyncio.Event()
    stop_services = asyncio.Event()
    ingest = asyncio.create_task(
        run_ingest(settings, stop_services, registry=registry, on_ready=lambda _: ready.set())
    )
    await _first(ready.wait(), ingest)
    conn = await connect(settings.database_url, settings.database_schema)
    await create_team(conn, DEMO_TEAM, "Demo telemonitoring centre")
    await add_member(conn, DEMO_TEAM, DEMO_CLINICIAN)
    api_ready = asyncio.Event()
    api = asyncio.create_task(run_api(settings, stop_services, on_ready=lambda _: api_ready.set()))
    await _first(api_ready.wait(), ingest, api)
    assert settings.token_issuer is not None
    assert settings.dev_issuer_key_file is not None
    token = DevIssuer(settings.token_issuer, settings.dev_issuer_key_file).token(
        DEMO_CLINICIAN, "Dr Demo", settings.oidc_audience
    )
    host, port = settings.http_host, settings.http_port
    api_url = f"http://{settings.api_host}:{settings.api_port}"
    logs = f"  logs       {log_file}\n" if log_file else ""
    print(
        f"\n  telemon demo is running (Ctrl-C stops everything)\n"
        f"  worklist   {api_url}/#token={token}\n"
        f"             (signed in as {DEMO_CLINICIAN}, team {DEMO_TEAM!r}; the link holds a\n"
        f"              development token, valid 12 h)\n"
        f"  API        {api_url}/docs\n"
        f"  metrics    http://{host}:{port}/metrics\n"
        f"  readiness  http://{host}:{port}/readyz\n"
        f"{logs}"
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
    progress = asyncio.create_task(_show_progress(registry, conn))
    try:
        await _first(stop.wait(), ingest, api)
    finally:
        stop.set()
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gateways
        await producer.stop()
        stop_services.set()
        totals, _ = await asyncio.gather(ingest, api)
        await conn.close()
    print(
        f"  ingest stopped: {totals.messages} messages, {totals.stored} readings stored, "
        f"{totals.duplicates} duplicates, {totals.rejected} rejected",
        flush=True,
    )
    return 0


async def _first(awaitable: Awaitable[object], *services: asyncio.Task[Any]) -> None:
    """Wait for `awaitable`, unless a service dies first (then raise why)."""
    waiter = asyncio.ensure_future(awaitable)
    await asyncio.wait([waiter, *services], return_when=asyncio.FIRST_COMPLETED)
    for service in services:
        if service.done():
            waiter.cancel()
            service.result()


async def _show_progress(
    registry: CollectorRegistry, conn: Connection, every_s: float = 2.0
) -> None:
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
        await add_every_patient(conn, DEMO_TEAM)  # a second terminal may enroll more
        stored = total("telemon_ingest_readings_stored")
        print(
            f"  {(stored - previous) / every_s:8.0f} readings/s  {stored:10.0f} stored  "
            f"{total('telemon_ingest_readings_duplicate'):6.0f} duplicates  "
            f"{total('telemon_ingest_rejected'):6.0f} rejected  "
            f"episodes opened: {total('telemon_alerts_episodes_opened', severity='red'):5.0f} red "
            f"{total('telemon_alerts_episodes_opened', severity='orange'):5.0f} orange",
            flush=True,
        )
        previous = stored
