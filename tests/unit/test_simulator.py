"""The simulator: deterministic, Covidom-shaped, and faithful to the contract it exercises."""

from __future__ import annotations

import itertools
from collections import Counter

from devices.decode import Decoder
from devices.registry import Programme
from devices.simulator import (
    DAY_MS,
    CohortConfig,
    Faults,
    SimMessage,
    Simulation,
    build_cohort,
)
from tests.records import Record

START = 1_795_000_000_000


def take(n: int, malformed: float = 0, duplicate: float = 0, late: float = 0) -> list[SimMessage]:
    cohort = build_cohort(CohortConfig(patients=200, start_ms=START, days=14, seed=3))
    faults = Faults(malformed=malformed, duplicate=duplicate, late=late)
    simulation = Simulation(cohort, start_ms=START, seed=3, faults=faults)
    return list(itertools.islice(simulation, n))


def test_same_seed_same_messages() -> None:
    assert take(300) == take(300)


def test_cohort_is_shaped_like_covidom() -> None:
    cohort = build_cohort(CohortConfig(patients=5000, seed=9))
    worsening = sum(p.worsening is not None for p in cohort)
    assert worsening == 200  # 4 %
    programmes = Counter(p.programme for p in cohort)
    assert 0.65 < programmes[Programme.COVID] / 5000 < 0.75
    assert all(p.worsening.onset_ms < p.worsening.peak_ms for p in cohort if p.worsening)


def test_messages_are_in_send_order_with_increasing_device_sequences() -> None:
    messages = take(3000)
    assert [m.timestamp_ms for m in messages] == sorted(m.timestamp_ms for m in messages)
    last: dict[str, int] = {}
    for m in messages:
        assert m.sequence > last.get(m.device_id, 0)
        last[m.device_id] = m.sequence
    assert messages[-1].timestamp_ms - START > DAY_MS / 2


def test_every_valid_message_passes_the_decoder() -> None:
    """Parity between what the simulator produces and what the contract accepts."""
    messages = take(3000)
    records = [
        Record(m.value, m.key, offset=i, timestamp=m.timestamp_ms) for i, m in enumerate(messages)
    ]
    batch = Decoder(max_message_bytes=65536, future_tolerance_s=300).decode(
        records, messages[-1].timestamp_ms
    )
    assert batch.rejections == []
    assert len(batch) == sum(m.readings for m in messages)


def test_malformed_messages_are_rejected_for_the_reason_they_name() -> None:
    messages = take(2000, malformed=0.2)
    bad = [m for m in messages if m.fault]
    assert 300 < len(bad) < 500
    decoder = Decoder(max_message_bytes=65536, future_tolerance_s=300)
    for i, m in enumerate(bad):
        record = Record(m.value, m.key, offset=i, timestamp=m.timestamp_ms)
        batch = decoder.decode([record], m.timestamp_ms)
        assert m.fault is not None
        assert [r.reason.value for r in batch.rejections] == [m.fault.removeprefix("malformed:")]


def test_duplicates_repeat_a_message_and_late_uploads_arrive_late() -> None:
    messages = take(3000, duplicate=0.05, late=0.05)
    duplicates = [m for m in messages if m.fault == "duplicate"]
    assert duplicates
    originals = {(m.device_id, m.sequence): m.value for m in messages if m.fault is None}
    assert all(
        originals.get((d.device_id, d.sequence)) == d.value
        for d in duplicates
        if (d.device_id, d.sequence) in originals
    )
    late = [m for m in messages if m.fault == "late"]
    assert late
    assert all(b'"measured_at"' in m.value for m in late)
