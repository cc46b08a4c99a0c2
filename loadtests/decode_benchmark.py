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
import json
import statistics
import time
from dataclasses import dataclass

from devices.decode import Decoder
from loadtests.common import iso_ms, spo2_value

PATIENTS = 10_000
POLL = 1_000


@dataclass(frozen=True)
class Record:
    value: bytes
    key: bytes
    offset: int
    timestamp: int
    topic: str = "telemon.readings.v1"
    partition: int = 0
    content_type: str | None = None


def poll(first: int, readings_per_message: int, now_ms: int) -> list[Record]:
    records = []
    for n in range(first, first + POLL):
        patient = n % PATIENTS
        body = {
            "device_id": f"oxi-{patient}",
            "patient_id": f"p-{patient}",
            "readings": [
                {
                    "kind": "spo2",
                    "value": spo2_value(n + r),
                    "unit": "%",
                    "measured_at": iso_ms(now_ms - 600_000 + n + r),
                }
                for r in range(readings_per_message)
            ],
        }
        records.append(Record(json.dumps(body).encode(), f"p-{patient}".encode(), n, now_ms))
    return records


def with_one_bad_record(records: list[Record]) -> list[Record]:
    """The same poll, its last message in an unknown unit (rejected, the others kept)."""
    last = records[-1]
    bad = last.value.replace(b'"unit": "%"', b'"unit": "furlong"', 1)
    return [*records[:-1], Record(bad, last.key, last.offset, last.timestamp)]


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
    clean = [poll(p * POLL, args.readings_per_message, now_ms) for p in range(10)]
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
