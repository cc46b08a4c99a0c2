"""Ingest benchmark: telemon's drain rate against three baselines, latency, and memory.

    python -m loadtests.ingest_benchmark            # everything (about 10 minutes)
    python -m loadtests.ingest_benchmark --quick    # smaller runs, no 2M backlog
    python -m loadtests.ingest_benchmark --repeat 0 --backlog 0 --latency-rate 60000
    python -m loadtests.ingest_benchmark --designs telemon,bare-loop --latency-seconds 0 --backlog 0

Each implementation runs as its own process against the same broker and
PostgreSQL; a run loads N messages first, then measures from the first
committed offset to the last (a commit follows the durable write in every
design). Each round drains every design in turn; medians over --repeat rounds,
ratios taken within this run (telemon / bare loop also round by round).

Readings are SpO2 of COVID patients measured in the last minutes, so the
alert rules run on every reading; one reading in 997 is low enough to raise
alerts.
"telemon-no-alerts" is the same process with TELEMON_ALERTS_ENABLED=false.

Targets (issue 3): telemon >= 1.3x the sequential batch loop and >= 50x the
per-message consumer on single-reading messages; 10-reading messages >= 2x
the single-reading rate in readings/s; p99 device-time -> durable < 1 s at
half the peak rate; peak RSS < 300 MB while draining 2 million messages.
(issue 4): the rules cost < 15 % of the throughput; p99 device-time -> alert
durable < 1.5 s at half the peak rate. (issue 22): telemon, doing all its work,
>= 1.0x the bare loop (loadtests.baselines: getmany -> msgspec -> binary COPY
-> commit), round by round and at the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from ingest.platform import Settings
from loadtests.common import (
    benchmark_stack,
    drop_topics,
    fresh,
    http_port,
    iso_ms,
    measure_drain,
    median,
    messages,
    peak_rss_mb,
    process,
    produce,
    spo2_message,
    telemon_ingest,
)

PATIENTS = 10_000


@dataclass
class Figures:
    telemon_msgs_per_s: float = 0.0
    telemon_no_alerts_msgs_per_s: float = 0.0
    bare_loop_msgs_per_s: float = 0.0
    telemon_per_bare_loop_by_round: list[float] = field(default_factory=list)
    sequential_msgs_per_s: float = 0.0
    per_message_msgs_per_s: float = 0.0
    telemon_10_readings_per_s: float = 0.0
    latency_rate_msgs_per_s: float = 0.0
    latency_p50_s: float = 0.0
    latency_p99_s: float = 0.0
    alert_latency_p50_s: float = 0.0
    alert_latency_p99_s: float = 0.0
    backlog_messages: int = 0
    backlog_msgs_per_s: float = 0.0
    backlog_peak_rss_mb: float = 0.0
    backlog_peak_rss_with_workers_mb: float = 0.0


async def drain_rate(
    base: Settings, design: str, count: int, per_message: int = 1, compression: str | None = None
) -> float:
    """Load `count` messages, start `design`, return its drain rate in messages/s."""
    settings = await fresh(base, design.replace("-", "_"), PATIENTS)
    recent_ms = int(time.time() * 1000) - 10 * 60_000  # current readings: rules evaluate them
    loaded = messages(count, PATIENTS, per_message, start_ms=recent_ms)
    await produce(settings, loaded, compression)
    telemon = design.startswith("telemon")
    command = telemon_ingest() if telemon else ["-m", "loadtests.baselines", design]
    alerts = {"alerts_enabled": design != "telemon-no-alerts"} if telemon else {}
    async with process(command, settings, http_port=http_port(), **alerts):
        drain = await measure_drain(settings, count)
    await drop_topics(settings)
    print(
        f"  {design:12s} {per_message:2d} reading(s)/msg: {drain.messages:8d} msgs in "
        f"{drain.seconds:6.2f} s = {drain.rate:9.0f} msg/s = {drain.rate * per_message:9.0f} "
        "readings/s",
        flush=True,
    )
    return drain.rate


async def latency(base: Settings, rate: float, seconds: float) -> tuple[float, ...]:
    """Produce at `rate`; p50 and p99 of device time -> durable, then of device time ->
    alert durable."""
    settings = await fresh(base, "latency", PATIENTS)
    port = http_port()
    async with process(telemon_ingest(), settings, http_port=port):
        await asyncio.sleep(8)  # group join
        await produce_at_rate(settings, rate, seconds)
        await asyncio.sleep(2)
        metrics = await asyncio.to_thread(fetch_text, f"http://127.0.0.1:{port}/metrics")
    figures = []
    for name in ("telemon_ingest_durable_latency_seconds", "telemon_alerts_latency_seconds"):
        buckets = _buckets(metrics, name)
        p50, p99 = _quantile(buckets, 0.50), _quantile(buckets, 0.99)
        print(f"  {name} at {rate:.0f} msg/s: p50 {p50:.3f} s, p99 {p99:.3f} s", flush=True)
        figures += [p50, p99]
    return tuple(figures)


# How often the load generator sends: the latency it adds (a reading waits at most this
# long) against the batches it makes, one per partition per send. tansu's memory storage
# lists every batch of a partition at each fetch, so it slows down with every batch it
# holds (a fetch at the end of a partition of 20,000 one-record batches: 63 ms, against
# 8 ms when empty), which Apache Kafka's indexed log does not; sending every 5 ms made
# latency grow through a 30-second run.
SEND_EVERY_S = 0.02
# At most this much (uncompressed) per batch: a send is then one batch per partition
# (with aiokafka's 16 KiB, a send every 100 ms at 60k msg/s made six).
BATCH_BYTES = 512 * 1024


async def produce_at_rate(
    settings: Settings,
    rate: float,
    seconds: float,
    compression: str | None = None,
    send_every_s: float = SEND_EVERY_S,
) -> None:
    """Produce `rate` messages/s for `seconds`. Message n is measured at its due time,
    start + n / rate, and sent at the next tick: the latency it shows includes the wait
    for the tick, and any lag of this generator. Batches are built per partition (the
    default partitioner's choice, cached per key), with no future per message."""
    from aiokafka.partitioner import murmur2

    from ingest.platform import make_producer

    producer = make_producer(
        settings, linger_ms=0, compression_type=compression, max_batch_size=BATCH_BYTES
    )
    await producer.start()
    try:
        partitions = len(await producer.partitions_for(settings.readings_topic))
        partition_of = [
            (murmur2(f"p-{p}".encode()) & 0x7FFFFFFF) % partitions for p in range(PATIENTS)
        ]
        started = time.monotonic()
        started_ms = time.time() * 1000
        sent = 0
        measured_ms, measured_at = -1, ""
        while (elapsed := time.monotonic() - started) < seconds:
            now_ms = int(time.time() * 1000)
            batches: dict[int, Any] = {}
            due = range(sent, int(elapsed * rate))
            for n in due:
                if (due_ms := int(started_ms + n * 1000 / rate)) != measured_ms:
                    measured_ms, measured_at = due_ms, iso_ms(due_ms)
                key, value = spo2_message(n, PATIENTS, measured_at)
                partition = partition_of[n % PATIENTS]
                batch = batches.get(partition) or batches.setdefault(
                    partition, producer.create_batch()
                )
                if batch.append(key=key, value=value, timestamp=now_ms) is None:
                    await producer.send_batch(batch, settings.readings_topic, partition=partition)
                    batches[partition] = batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=now_ms)
            sent = max(sent, due.stop)
            for partition, batch in batches.items():
                await producer.send_batch(batch, settings.readings_topic, partition=partition)
            await asyncio.sleep(max(0.0, send_every_s - (time.monotonic() - started - elapsed)))
        await producer.flush()
    finally:
        await producer.stop()


def fetch_text(url: str) -> str:
    with urllib.request.urlopen(url) as response:  # noqa: S310 - our own endpoint
        return str(response.read().decode())


def _buckets(text: str, name: str) -> list[tuple[float, float]]:
    pattern = re.compile(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', re.MULTILINE)
    return [(float(le), float(count)) for le, count in pattern.findall(text)]


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """histogram_quantile as Prometheus computes it (linear within the bucket)."""
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(
                1.0, count - lower_count
            )
        lower_bound, lower_count = bound, count
    return float("nan")


async def backlog(base: Settings, count: int) -> tuple[float, float, float]:
    settings = await fresh(base, "backlog", PATIENTS)
    await produce(settings, messages(count, PATIENTS))
    async with process(telemon_ingest(), settings, http_port=http_port()) as child:
        drain = await measure_drain(settings, count, timeout_s=1800)
        own, with_workers = peak_rss_mb(child.pid)
    print(
        f"  backlog of {count} msgs: {drain.rate:.0f} msg/s, peak RSS {own:.0f} MB "
        f"({with_workers:.0f} MB with the decode worker)",
        flush=True,
    )
    return drain.rate, own, with_workers


# Every design a round may drain, in the order it drains them.
DESIGNS = ("telemon", "bare-loop", "telemon-no-alerts", "sequential", "per-message", "telemon-10")


async def run(base: Settings, args: argparse.Namespace) -> Figures:
    figures = Figures()
    rates: dict[str, list[float]] = {design: [] for design in args.designs}
    # Interleaved, so that a noisy minute of the machine hits every design alike.
    for round_ in range(1, args.repeat + 1):
        print(f"round {round_} of {args.repeat}:", flush=True)
        for design in args.designs:
            if design == "telemon-10":
                rate = await drain_rate(base, "telemon", args.messages // 10, per_message=10)
            elif design == "per-message":
                rate = await drain_rate(base, design, args.per_message_messages)
            else:
                rate = await drain_rate(base, design, args.messages)
            rates[design].append(rate)
    if args.repeat:
        medians = {design: median(values) for design, values in rates.items()}
        figures.telemon_msgs_per_s = medians.get("telemon", 0.0)
        figures.telemon_no_alerts_msgs_per_s = medians.get("telemon-no-alerts", 0.0)
        figures.bare_loop_msgs_per_s = medians.get("bare-loop", 0.0)
        figures.sequential_msgs_per_s = medians.get("sequential", 0.0)
        figures.per_message_msgs_per_s = medians.get("per-message", 0.0)
        figures.telemon_10_readings_per_s = 10 * medians.get("telemon-10", 0.0)
        if "telemon" in rates and "bare-loop" in rates:
            figures.telemon_per_bare_loop_by_round = [
                t / b for t, b in zip(rates["telemon"], rates["bare-loop"], strict=True)
            ]
    if args.latency_seconds:
        print("latency:", flush=True)
        figures.latency_rate_msgs_per_s = args.latency_rate or figures.telemon_msgs_per_s / 2
        (
            figures.latency_p50_s,
            figures.latency_p99_s,
            figures.alert_latency_p50_s,
            figures.alert_latency_p99_s,
        ) = await latency(base, figures.latency_rate_msgs_per_s, args.latency_seconds)
    if args.backlog:
        print("backlog:", flush=True)
        figures.backlog_messages = args.backlog
        (
            figures.backlog_msgs_per_s,
            figures.backlog_peak_rss_mb,
            figures.backlog_peak_rss_with_workers_mb,
        ) = await backlog(base, args.backlog)
    return figures


def verdict(f: Figures) -> list[str]:
    lines = _drain_verdict(f) if f.telemon_msgs_per_s else []
    if f.latency_rate_msgs_per_s:
        lines += [
            f"{'p99 device time -> durable':36s} {f.latency_p99_s:8.3f} s  (target < 1 s)  "
            f"{'OK' if f.latency_p99_s < 1 else 'MISSED'}",
            f"{'p99 device time -> alert durable':36s} {f.alert_latency_p99_s:8.3f} s  "
            f"(target < 1.5 s)  {'OK' if f.alert_latency_p99_s < 1.5 else 'MISSED'}",
        ]
    if f.backlog_messages:
        rss = f.backlog_peak_rss_with_workers_mb
        lines.append(
            f"{'peak RSS draining, with workers':36s} {rss:8.0f} MB "
            f"(target < 300 MB) {'OK' if rss < 300 else 'MISSED'}"
        )
    return lines


def _drain_verdict(f: Figures) -> list[str]:
    telemon = f.telemon_msgs_per_s
    checks = [
        (name, telemon / other, target)
        for name, other, target in (
            ("telemon / bare loop, medians", f.bare_loop_msgs_per_s, 1.0),
            ("telemon / sequential batch loop", f.sequential_msgs_per_s, 1.3),
            ("telemon / per-message consumer", f.per_message_msgs_per_s, 50),
        )
        if other
    ]
    if f.telemon_per_bare_loop_by_round:
        paired = median(f.telemon_per_bare_loop_by_round)
        checks.append(("telemon / bare loop, paired (median)", paired, 1.0))
    if f.telemon_10_readings_per_s:
        ten = f.telemon_10_readings_per_s / telemon
        checks.append(("10-reading / 1-reading readings/s", ten, 2))
    lines = [
        f"{name:36s} {ratio:8.2f}x  (target >= {target}x)  {'OK' if ratio >= target else 'MISSED'}"
        for name, ratio, target in checks
    ]
    if f.telemon_per_bare_loop_by_round:
        by_round = ", ".join(f"{r:.2f}" for r in f.telemon_per_bare_loop_by_round)
        lines.append(f"{'telemon / bare loop, by round':36s} {by_round}")
    if f.telemon_no_alerts_msgs_per_s:
        cost = 1 - telemon / f.telemon_no_alerts_msgs_per_s
        lines.append(
            f"{'rules cost, share of throughput':36s} {cost:8.1%}   (target < 15 %)  "
            f"{'OK' if cost < 0.15 else 'MISSED'}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--per-message-messages", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--latency-seconds", type=float, default=30, help="0: no latency measurement"
    )
    parser.add_argument(
        "--latency-rate", type=float, default=0, help="msg/s; default: half the measured peak"
    )
    parser.add_argument("--backlog", type=int, default=2_000_000)
    parser.add_argument("--quick", action="store_true", help="smaller runs, no backlog")
    parser.add_argument(
        "--designs",
        type=lambda text: tuple(text.split(",")),
        default=DESIGNS,
        help=f"comma-separated, drained in this order each round (default: {','.join(DESIGNS)})",
    )
    args = parser.parse_args()
    if unknown := set(args.designs) - set(DESIGNS):
        parser.error(f"unknown designs: {', '.join(sorted(unknown))}")
    if not args.repeat and not args.latency_rate:
        parser.error("--repeat 0 (latency and backlog only) needs --latency-rate")
    if args.quick:
        args.messages, args.per_message_messages, args.repeat = 50_000, 1_000, 1
        args.latency_seconds, args.backlog = 15, 0
    with benchmark_stack() as base:
        figures = asyncio.run(run(base, args))
    print("\n".join(["", *verdict(figures)]))
    print(json.dumps(asdict(figures)))


if __name__ == "__main__":
    main()
