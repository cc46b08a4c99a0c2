"""Soak: telemon ingest (rules on) at 70 % of its measured peak for half an hour.

    python -m loadtests.soak                      # 30 minutes at 70 % of the peak
    python -m loadtests.soak --minutes 2 --rate 20000

The peak is what telemon sustains in the soak's own conditions: the producer
and the broker on the same two cores. It is measured first: the drain rate of
a loaded topic (no producer running), then a minute of production at that rate,
the peak being the storage rate over its last 40 s. The producer compresses its
batches with zstd, as gateways should: the embedded broker (tansu, memory
storage) keeps every record, about 18 bytes each compressed against 180
uncompressed, and half an hour at 70 % of the peak then fits in memory.

Readings are produced at a steady rate, each measured at its due time. Every
`--sample-seconds` it reads the process's metrics and resident set: stored
readings, lag, RSS. It passes when throughput keeps up with the rate in the
last third as in the first, RSS is flat after warm-up (< 15 % growth), lag
stays under 10 s of load, and after the drain every produced reading is
stored once (rows = the ledger's messages = the stored offsets, no duplicate,
no dead letter).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time

import asyncpg
import psutil

from ingest.platform import Settings
from loadtests.common import benchmark_stack, fresh, http_port, process, telemon_ingest
from loadtests.ingest_benchmark import PATIENTS, drain_rate, fetch_text, produce_at_rate

# Half an hour with the embedded broker: tansu (0.6, memory storage) lists every batch of
# a partition at each fetch (dynostore.rs, `fetch`), and answers a fetch only after the
# consumer's fetch wait, whatever it found. Its work grows with every batch the soak
# produces, on the cores telemon uses. Sending every 20 ms with 50 ms fetches (two
# batches per partition and send), the soak stalled after ten minutes (the broker at
# 106 % of a core, nothing stored); every 100 ms with 500 ms fetches, the broker at times
# acknowledged too slowly for the producer, which then caught up in bursts (lag up to
# 53 s of load; it made six batches per partition and send). So the soak sends once a
# second, as an aggregating gateway would, in batches of up to 512 KiB (two per
# partition and send), and lets fetches wait 500 ms (tansu then answers after about
# 250 ms); neither changes what the soak measures, which is not latency.
SOAK_SEND_EVERY_S = 1.0
SOAK_SETTINGS = {"kafka_fetch_max_wait_ms": 500}


async def sustained_peak(base: Settings, compression: str | None) -> float:
    """Readings/s telemon stores while a producer on the same machine offers its drain rate."""
    drain = await drain_rate(base, "telemon", 300_000, compression=compression)
    settings = await fresh(base, "peak", PATIENTS)
    port = http_port()
    async with process(telemon_ingest(), settings, http_port=port, **SOAK_SETTINGS):
        await asyncio.sleep(8)  # group join
        producing = asyncio.create_task(
            produce_at_rate(settings, drain, 60, compression, SOAK_SEND_EVERY_S)
        )
        await asyncio.sleep(20)
        first = (time.monotonic(), await _stored(port))
        await asyncio.sleep(40)
        last = (time.monotonic(), await _stored(port))
        await producing
    peak = (last[1] - first[1]) / (last[0] - first[0])
    print(f"drain rate {drain:,.0f} msg/s; stored while producing at it: {peak:,.0f} msg/s")
    return peak


async def _stored(port: int) -> float:
    metrics = await asyncio.to_thread(fetch_text, f"http://127.0.0.1:{port}/metrics")
    return _value(metrics, "telemon_ingest_readings_stored_total")


async def soak(
    base: Settings, rate: float, minutes: float, sample_s: float, compression: str | None
) -> bool:
    settings = await fresh(base, "soak", PATIENTS)
    port = http_port()
    samples: list[tuple[float, float, float, float]] = []  # (t, stored, lag, rss MB)
    async with process(telemon_ingest(), settings, http_port=port, **SOAK_SETTINGS) as child:
        await asyncio.sleep(8)  # group join
        producing = asyncio.create_task(
            produce_at_rate(settings, rate, minutes * 60, compression, SOAK_SEND_EVERY_S)
        )
        started = time.monotonic()
        brokers = [p for p in psutil.process_iter(["name"]) if "tansu" in (p.info["name"] or "")]
        _broker_cpu(brokers)  # starts the measurement
        while not producing.done():
            await asyncio.sleep(sample_s)
            metrics = await asyncio.to_thread(fetch_text, f"http://127.0.0.1:{port}/metrics")
            stored = _value(metrics, "telemon_ingest_readings_stored_total")
            lag = _sum(metrics, "telemon_ingest_consumer_lag")
            rss = _rss_mb(child.pid)
            t = time.monotonic() - started
            samples.append((t, stored, lag, rss))
            broker = _broker_cpu(brokers)
            print(
                f"  {t:6.0f} s  stored {stored:12,.0f}  lag {lag:9,.0f}  RSS {rss:6.0f} MB  "
                f"broker CPU {broker}"
            )
        await producing
        drained = await _drained(settings, timeout_s=300)
    steady = _verdict(samples, rate, drained)
    exact = await _exactly_once(settings)  # checked whatever the verdict above
    return steady and exact


def _verdict(samples: list[tuple[float, float, float, float]], rate: float, drained: bool) -> bool:
    third = max(len(samples) // 3, 2)
    first, last = samples[:third], samples[-third:]

    def throughput(part: list[tuple[float, float, float, float]]) -> float:
        return (part[-1][1] - part[0][1]) / (part[-1][0] - part[0][0])

    warm = samples[min(len(samples) - 1, max(1, len(samples) // 6))][3]  # after warm-up
    growth = samples[-1][3] / warm - 1
    max_lag = max(s[2] for s in samples)
    checks = {
        f"throughput first third {throughput(first):,.0f}/s, last third "
        f"{throughput(last):,.0f}/s (rate {rate:,.0f}/s)": throughput(last) > 0.9 * rate,
        f"RSS {warm:.0f} MB after warm-up, {samples[-1][3]:.0f} MB at the end "
        f"({growth:+.1%})": growth < 0.15,
        f"largest lag {max_lag:,.0f} readings (bound: 10 s of load)": max_lag < 10 * rate,
        "drained after the load": drained,
    }
    for text, ok in checks.items():
        print(f"{'OK    ' if ok else 'FAILED'} {text}")
    return all(checks.values())


async def _drained(settings: Settings, timeout_s: float) -> bool:
    """The stored offsets stop moving and every batch is written."""
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        schema = settings.database_schema
        previous, still = -1, 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and still < 5:
            current = await conn.fetchval(f'SELECT sum(next_offset) FROM "{schema}".ingest_offsets')
            still = still + 1 if current == previous else 0
            previous = current
            await asyncio.sleep(1)
        return still >= 5
    finally:
        await conn.close()


async def _exactly_once(settings: Settings) -> bool:
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        s = settings.database_schema
        row = await conn.fetchrow(
            f'SELECT (SELECT count(*) FROM "{s}".readings) AS rows, sum(messages) AS messages, '
            "sum(readings_duplicate) AS duplicate, sum(dead_letters) AS dead, "
            f'(SELECT sum(next_offset) FROM "{s}".ingest_offsets) AS offsets '
            f'FROM "{s}".ingest_ledger'
        )
        assert row is not None
        ok = row["rows"] == row["messages"] == row["offsets"] and not row["duplicate"]
        ok = ok and not row["dead"]
        print(
            f"{'OK    ' if ok else 'FAILED'} {row['rows']:,} rows for {row['messages']:,} "
            f"messages over {row['offsets']:,} offsets, {row['duplicate']} duplicates, "
            f"{row['dead']} dead letters"
        )
        return bool(ok)
    finally:
        await conn.close()


def _value(metrics: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _sum(metrics: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}{{[^}}]*}} (\S+)$", metrics, re.MULTILINE))


def _broker_cpu(brokers: list[psutil.Process]) -> str:
    """The embedded broker's CPU since the last call, in % of a core ("-": not embedded)."""
    if not brokers:
        return "-"
    return f"{sum(b.cpu_percent() for b in brokers if b.is_running()):.0f} %"


def _rss_mb(pid: int) -> float:
    parent = psutil.Process(pid)
    members = [parent, *parent.children(recursive=True)]
    return sum(p.memory_info().rss for p in members if p.is_running()) / 2**20


async def main_async(args: argparse.Namespace) -> bool:
    with benchmark_stack() as base:
        rate = args.rate
        if rate is None:
            peak = await sustained_peak(base, args.compression)
            rate = 0.7 * peak
            print(f"peak {peak:,.0f} msg/s; soaking at 70 %: {rate:,.0f} msg/s", flush=True)
        return await soak(base, rate, args.minutes, args.sample_seconds, args.compression)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, help="msg/s; default: 70 %% of the measured peak")
    parser.add_argument("--sample-seconds", type=float, default=30)
    parser.add_argument(
        "--compression", default="zstd", help="the producer's codec; 'none' for none"
    )
    args = parser.parse_args()
    args.compression = None if args.compression == "none" else args.compression
    raise SystemExit(0 if asyncio.run(main_async(args)) else 1)


if __name__ == "__main__":
    main()
