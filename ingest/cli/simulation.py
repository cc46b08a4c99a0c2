"""Simulated device gateways, and the demo: the whole stack on this machine."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from devices.gateways import GatewayPlan
from ingest.cli.common import (
    Commands,
    connection_flags,
    log_to_file,
    require_connections,
    run_until_signalled,
)
from ingest.platform import Settings

__all__ = ["add_commands"]

log = logging.getLogger("telemon")

DEMO_LOG = Path(".telemon/demo.log")


def add_commands(commands: Commands) -> None:
    p = commands.command(
        "simulate", _simulate, "Simulate device gateways: enroll a cohort and produce its readings."
    )
    connection_flags(p)
    _simulation_flags(p)

    p = commands.command(
        "demo",
        _demo,
        "Embedded PostgreSQL and broker, the simulator and the "
        "pipeline, with live progress. Ctrl-C stops everything.",
    )
    p.add_argument("--http-port", type=int, help="TELEMON_HTTP_PORT")
    p.add_argument("--api-port", type=int, help="TELEMON_API_PORT")
    p.add_argument(
        "--log", type=Path, default=DEMO_LOG, help="where the logs go (default %(default)s)"
    )
    _simulation_flags(p, patients=2000, days=7.0, rate=1000.0, follow=True)


def _simulation_flags(
    p: argparse.ArgumentParser,
    *,
    patients: int = 1000,
    days: float = 14.0,
    rate: float = 0.0,
    follow: bool = False,
) -> None:
    p.add_argument("--patients", type=int, default=patients)
    p.add_argument(
        "--days",
        type=float,
        default=days,
        help="history to simulate, ending now (default %(default)s)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=rate,
        help="messages per second, 0 for as fast as possible (default %(default)s)",
    )
    p.add_argument("--count", type=int, help="stop after this many messages")
    p.add_argument(
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=follow,
        help="after catching up with the present, go on in real time",
    )
    p.add_argument("--worsening", type=float, default=0.04, help="share of worsening patients")
    p.add_argument(
        "--wearables",
        type=float,
        default=0.0,
        help="share of patients with a pulse oximeter sending every minute",
    )
    p.add_argument("--malformed", type=float, default=0.0, help="share of malformed messages")
    p.add_argument("--duplicates", type=float, default=0.0, help="share sent twice")
    p.add_argument("--late", type=float, default=0.0, help="share uploaded hours late")
    p.add_argument(
        "--readings-per-message",
        type=int,
        help="force this many readings per message (a gateway's upload size)",
    )
    p.add_argument("--id-prefix", default="p", help="patient id prefix (default %(default)s)")
    p.add_argument("--seed", type=int, default=1)


def gateway_plan(args: argparse.Namespace) -> GatewayPlan:
    from devices.gateways import history_start_ms
    from devices.simulator import CohortConfig, Faults

    return GatewayPlan(
        cohort=CohortConfig(
            patients=args.patients,
            worsening_share=args.worsening,
            wearable_share=args.wearables,
            start_ms=history_start_ms(args.days),
            days=args.days,
            id_prefix=args.id_prefix,
            seed=args.seed,
        ),
        faults=Faults(malformed=args.malformed, duplicate=args.duplicates, late=args.late),
        rate=args.rate,
        count=args.count,
        follow=args.follow,
        readings_per_message=args.readings_per_message,
    )


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from devices.gateways import run_gateways
    from ingest.platform import make_producer

    require_connections(settings)
    plan = gateway_plan(args)

    async def work(stop: asyncio.Event) -> int:
        assert settings.database_url is not None
        producer = make_producer(settings)
        await producer.start()
        try:
            stats = await run_gateways(
                plan,
                dsn=settings.database_url,
                schema=settings.database_schema,
                producer=producer,
                topic=settings.readings_topic,
                stop=stop,
                on_progress=lambda s: log.info(
                    "simulator: %d messages, %.0f/s", s.messages, s.rate
                ),
            )
        finally:
            await producer.stop()
        log.info(
            "simulator: sent %d messages (%d readings) at %.0f/s; faults: %s",
            stats.messages,
            stats.readings,
            stats.rate,
            dict(stats.faults) or "none",
        )
        return 0

    return run_until_signalled(work)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.demo import run_demo
    from ingest.platform import embedded_stack

    log_to_file(args.log)
    print(f"\n  starting telemon: PostgreSQL, a broker, the pipeline, the API (logs: {args.log})")
    with embedded_stack(settings) as running:
        return run_until_signalled(
            lambda stop: run_demo(running, gateway_plan(args), stop, log_file=args.log)
        )
