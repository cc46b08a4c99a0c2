"""The simulator: deterministic, Covidom-shaped, and faithful to the contract it exercises."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from datetime import datetime, timedelta

from aiokafka import AIOKafkaProducer

from devices.catalogue import VitalKind as K
from devices.decode import Decoder
from devices.gateways import produce
from devices.registry import Programme
from devices.simulator import (
    DAY_MS,
    Artefacts,
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
    assert all(p.worsening.onset_ms < p.worsening.hospitalised_ms for p in cohort if p.worsening)


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


def covid_readings(patients: int, days: float, **config: float) -> list[tuple[str, int, dict]]:  # type: ignore[type-arg]
    """(patient, send time, reading) of a COVID-19 cohort's messages over `days`."""
    cohort = build_cohort(
        CohortConfig(
            patients=patients,
            programme_mix={Programme.COVID: 1.0},
            start_ms=START,
            days=days,
            seed=4,
            **config,  # type: ignore[arg-type]
        )
    )
    found: list[tuple[str, int, dict]] = []  # type: ignore[type-arg]
    for m in Simulation(cohort, start_ms=START, seed=4):
        if m.timestamp_ms > START + days * DAY_MS:
            break
        found.extend((m.patient_id, m.timestamp_ms, r) for r in json.loads(m.value)["readings"])
    return found


def test_covid_patients_measure_twice_a_day_and_re_measure_when_asked() -> None:
    """Two oximeter sessions a day, plus re-measures minutes after an abnormal value."""
    readings = covid_readings(100, 4)
    spo2 = [(p, r) for p, _, r in readings if r["kind"] == "spo2"]
    per_day = len(spo2) / 100 / 4
    assert 2.0 < per_day < 2.4  # sessions (2, less 2 % missed) and re-measures
    times: dict[str, list[datetime]] = {}
    for p, r in spo2:
        times.setdefault(p, []).append(datetime.fromisoformat(str(r["measured_at"])))
    gaps = [b - a for t in times.values() for a, b in itertools.pairwise(sorted(t))]
    assert any(gap <= timedelta(minutes=10) for gap in gaps)  # re-measures
    assert sum(gap > timedelta(hours=10) for gap in gaps) > 0.8 * len(gaps)  # sessions


def test_baselines_are_personal_with_some_usual_spo2_of_94_to_95() -> None:
    cohort = build_cohort(CohortConfig(patients=2000, programme_mix={Programme.COVID: 1.0}))
    usual = [p.baseline[K.SPO2] for p in cohort]
    low = sum(94 <= u < 96 for u in usual) / len(usual)
    assert 0.08 < low < 0.2
    assert max(usual) - min(usual) > 4


def far_from_usual(artefacts: Artefacts) -> tuple[int, int, int]:
    """Stable COVID-19 patients' SpO2 4+ points under, and pulse 25+ /min over, their usual
    value; and how many oximeter readings there were."""
    cohort = build_cohort(
        CohortConfig(patients=200, programme_mix={Programme.COVID: 1.0}, worsening_share=0)
    )
    usual = {p.patient_id: p.baseline for p in cohort}
    simulation = Simulation(cohort, start_ms=START, seed=4, artefacts=artefacts)
    low = high = total = 0
    for m in itertools.islice(simulation, 6000):
        for r in json.loads(m.value)["readings"]:
            if r["kind"] == "spo2":
                total += 1
                low += r["value"] <= usual[m.patient_id][K.SPO2] - 4
            elif r["kind"] == "heart_rate":
                high += r["value"] >= usual[m.patient_id][K.HEART_RATE] + 25
    return low, high, total


def test_artefacts_read_spo2_low_and_pulse_high() -> None:
    """A cold finger or a moving hand: far from the patient's usual value, now and then."""
    low, high, total = far_from_usual(Artefacts(cold_finger=0.02, motion=0.02))
    assert 0.01 < low / total < 0.03
    assert 0.01 < high / total < 0.03
    assert far_from_usual(Artefacts(cold_finger=0, motion=0))[:2] == (0, 0)


def test_a_worsening_ends_in_a_hospitalisation_one_to_three_days_after_onset() -> None:
    cohort = build_cohort(CohortConfig(patients=500, worsening_share=0.1, seed=2))
    worsening = [p for p in cohort if p.worsening]
    assert all(24 <= p.worsening.hours <= 72 for p in worsening if p.worsening)
    last: dict[str, int] = {}
    for m in itertools.takewhile(
        lambda m: m.timestamp_ms < START + 14 * DAY_MS, Simulation(cohort, start_ms=START)
    ):
        last[m.patient_id] = m.timestamp_ms
    for p in worsening:
        assert p.worsening is not None
        assert last[p.patient_id] < p.worsening.hospitalised_ms + 60_000  # follow-up ends


async def test_a_following_gateway_stops_while_waiting_for_its_next_message() -> None:
    """Caught up with the present, a gateway waits for its next message's time (hours, for a
    device measuring twice a day): a stop ends the wait, and nothing more is sent."""
    an_hour_ahead = int(time.time() * 1000) + 3_600_000
    message = SimMessage(b"p-1", b"{}", an_hour_ahead, "p-1", "d-1", 1, 1)
    stop = asyncio.Event()
    never_started = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")  # nothing to send
    producing = asyncio.create_task(
        produce(never_started, "readings", iter([message]), follow=True, stop=stop)
    )
    await asyncio.sleep(0.05)
    assert not producing.done()  # waiting for the message's time
    stop.set()
    stats = await asyncio.wait_for(producing, 60)  # not the hour
    assert stats.messages == 0
