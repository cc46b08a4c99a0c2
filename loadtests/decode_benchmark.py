"""The decoder alone: a clean poll, taken whole, against the same poll with one bad
record in it, which sends it record by record with the messages the attempt decoded
(the baseline, in the same run).

    python -m loadtests.decode_benchmark
    python -m loadtests.decode_benchmark --readings-per-message 10

Polls of 1,000 messages of the ingest benchmark (one SpO2 reading each, 10,000
patients, or N readings each), decoded as the decode worker does; every
identifier and pair seen once before timing, as in a drain. Best and median
of --repeat timings of 20 polls each, in µs a record.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

from devices.decode import Decoder
from loadtests.common import messages
from tests.records import Record

PATIENTS = 10_000
POLL = 1_000


def benchmark_polls(readings_per_message: int, now_ms: int) -> list[list[Record]]:
    """Ten polls of the ingest benchmark's messages, measured in the last ten minutes."""
    loaded = messages(10 * POLL, PATIENTS, readings_per_message, start_ms=now_ms - 600_000)
    records = [
        Record(value, key, offset=n, timestamp=now_ms) for n, (key, value) in enumerate(loaded)
    ]
    return [records[start : start + POLL] for start in range(0, len(records), POLL)]


def with_one_bad_record(records: list[Record]) -> list[Record]:
    """The same poll, its last message in an unknown unit (rejected, the others kept)."""
    last = records[-1]
    assert last.value is not None
    bad = last.value.replace(b'"unit": "%"', b'"unit": "furlong"', 1)
    return [*records[:-1], replace(last, value=bad)]


def timings(decoder: Decoder, polls: list[list[Record]], now_ms: int, repeat: int) -> list[float]:
    for records in polls:
        decoder.decode(records, now_ms)
    per_record = []
    for _ in range(repeat):
        started = time.perf_counter()
        for i in range(20):
            decoder.decode(polls[i % len(polls)], now_ms)
        per_record.append((time.perf_counter() - started) / (20 * POLL) * 1e6)
    return per_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings-per-message", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    now_ms = int(time.time() * 1000)
    decoder = Decoder(max_message_bytes=256 * 1024, future_tolerance_s=300)
    clean = benchmark_polls(args.readings_per_message, now_ms)
    one_bad = [with_one_bad_record(records) for records in clean]
    assert len(decoder.decode(one_bad[0], now_ms).rejections) == 1
    figures = {}
    for name, polls in (("one bad record (record by record)", one_bad), ("whole poll", clean)):
        taken = timings(decoder, polls, now_ms, args.repeat)
        figures[name] = min(taken)
        median = statistics.median(taken)
        print(f"  {name:34s} best {min(taken):5.2f}  median {median:5.2f} µs a record")
    ratio = figures["one bad record (record by record)"] / figures["whole poll"]
    print(f"whole poll / record by record, best against best: {ratio:.2f}x faster")


if __name__ == "__main__":
    main()
