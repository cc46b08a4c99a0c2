"""Parity: the numpy engine and the scalar reference raise exactly the same candidates."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.engine import Engine, PatientProfile
from alerts.programmes import load_config
from alerts.scores import ScoreKey
from devices.catalogue import BY_KIND, CATALOGUE, ValueType
from devices.decode import Decoder
from devices.registry import DeviceType, Programme
from devices.simulator import CohortConfig, Simulation, build_cohort
from tests.records import Record
from tests.reference_rules import Fired, ReferenceEngine, as_fired, key

# The reference emits every firing: so does the engine here (no repeat window).
CONFIG = dataclasses.replace(load_config(), repeat_window_us=0)
HOUR = 3_600_000_000
DAY = 24 * HOUR
BASE = 1_795_000_000_000_000  # 2026-11-18, µs

Row = tuple[int, int, float, int, int, int | None]


@dataclass
class Both:
    engine: Engine
    reference: ReferenceEngine
    scored_sets: int = 0  # NEWS2 scores compared so far

    @classmethod
    def of(cls, profiles: list[PatientProfile]) -> Both:
        both = cls(Engine(CONFIG), ReferenceEngine(CONFIG))
        both.engine.add_patients(profiles)
        both.reference.add_patients(profiles)
        return both

    def batch(self, rows: list[Row]) -> list[Fired]:
        ours = as_fired(
            self.engine.evaluate(
                np.array([r[0] for r in rows], np.int32),
                np.array([r[1] for r in rows], np.int16),
                np.array([r[2] for r in rows], np.float64),
                np.array([r[3] for r in rows], np.int64),
                np.array([r[4] for r in rows], np.int64),
                np.array([r[5] if r[5] is not None else -1 for r in rows], np.int32),
            )
        )
        theirs = self.reference.evaluate(rows)
        assert key(ours) == key(theirs)
        scores = {(k.partition, k.day, k.programme, k.score): n for k, n in self.scored()}
        assert scores == self.reference.scored
        self.reference.scored.clear()
        self.scored_sets += sum(scores.values())
        return ours

    def scored(self) -> list[tuple[ScoreKey, int]]:
        """The engine's NEWS2 counts of the batch (every scored set, alerting or not)."""
        counted = self.engine.take_scores()
        assert {k.rule_id for k in counted} <= {"news2"}
        return list(counted.items())

    def sweep(self, now: dict[int, int]) -> list[Fired]:
        ours = as_fired(self.engine.sweep(now))
        theirs = self.reference.sweep(now)
        assert key(ours) == key(theirs)
        return ours


def test_parity_on_the_simulated_cohort() -> None:
    """The example corpus: a simulated cohort's fortnight, worsening patients included."""
    start = BASE // 1000 - 14 * 86_400_000
    config = CohortConfig(
        patients=60,
        worsening_share=0.2,
        start_ms=start,
        days=14,
        seed=11,
        cgm_share=1.0,
        wearable_share=0.05,
    )
    cohort = build_cohort(config)
    keys = {p.patient_id: n for n, p in enumerate(cohort, start=1)}
    devices = {
        d.device_id: (keys[p.patient_id] * 10 + i) for p in cohort for i, d in enumerate(p.devices)
    }
    both = Both.of(
        [
            PatientProfile(
                keys[p.patient_id],
                p.programme,
                start * 1000 - DAY,
                keys[p.patient_id] % 2,
                [(devices[d.device_id], d.model.device_type) for d in p.devices],
            )
            for p in cohort
        ]
    )
    decoder = Decoder(max_message_bytes=1 << 20, future_tolerance_s=300)
    messages = iter(Simulation(cohort, start_ms=start, seed=11))
    fired = 0
    seen: set[tuple[str, int]] = set()
    for chunk in iter(lambda: list(itertools.islice(messages, 400)), []):
        if chunk[-1].timestamp_ms > start + 14 * 86_400_000:
            break
        batch = decoder.decode(
            [
                Record(bytes(m.value), bytes(m.key), offset=i, timestamp=m.timestamp_ms)
                for i, m in enumerate(chunk)
            ],
            chunk[-1].timestamp_ms,
        )
        rows: list[Row] = []
        for n, code, value, at, reference in zip(
            batch.message.tolist(),
            batch.kind.tolist(),
            batch.value.tolist(),
            batch.measured_at_us.tolist(),
            batch.reference_us.tolist(),
            strict=True,
        ):
            rows.append(
                (
                    keys[batch.messages.patient_id[n]],
                    code,
                    value,
                    at,
                    reference,
                    devices[batch.messages.device_id[n]],
                )
            )
        now = chunk[-1].timestamp_ms * 1000
        found = both.batch(rows) + both.sweep({0: now, 1: now})
        fired += len(found)
        seen.update((f.rule_id, f.severity) for f in found)
    assert fired > 50  # the corpus does exercise the rules
    # ... the confirmation (info, then red unconfirmed), the trends and the usual values too
    assert {
        ("spo2_covid", 1),
        ("spo2_scale1", 1),
        ("heart_rate", 1),
        ("spo2_unconfirmed", 3),
        ("baseline_deviation", 2),
        ("news2_rising", 2),
        ("spo2_drop_baseline", 2),
    } <= seen
    assert both.scored_sets > 1000  # and NEWS2 scores, alerting or not


# -- generated cohorts ----------------------------------------------------------------------

KINDS = [v for v in CATALOGUE]
INTERESTING: dict[str, list[float]] = {  # values around the thresholds and bands
    "spo2": [79, 83, 84, 87, 88, 91, 92, 93, 94, 95, 96, 97, 98, 100],
    "heart_rate": [35, 40, 41, 50, 51, 90, 91, 110, 111, 130, 131, 150],
    "respiratory_rate": [6, 8, 9, 11, 12, 20, 21, 24, 25, 30],
    "systolic_bp": [85, 90, 91, 100, 101, 110, 111, 219, 220, 230],
    "body_temperature": [34.5, 35.0, 35.1, 36.0, 36.1, 38.0, 38.1, 39.0, 39.1, 40.0],
    "glucose": [40, 53.9, 54, 69.9, 70, 140, 250, 250.1, 300],
    "glucose_cgm": [50, 65, 69.9, 70, 100, 180],
    "body_weight": [70, 70.5, 71, 72, 72.5, 73, 75],
    "ventilator_leak": [10, 23.9, 24, 24.1, 30, 45],
    "oxygen_flow": [0, 0.5, 2],
}


@st.composite
def cohorts(draw: st.DrawFn) -> tuple[list[PatientProfile], list[list[Row]], list[int]]:
    n = draw(st.integers(1, 5))
    profiles = []
    for p in range(1, n + 1):
        programme = draw(st.sampled_from(list(Programme)))
        enrolled = BASE - draw(st.integers(0, 70)) * DAY - draw(st.integers(0, 23)) * HOUR
        devices = [
            (p * 10 + i, draw(st.sampled_from(list(DeviceType))))
            for i in range(draw(st.integers(1, 3)))
        ]
        overrides = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "patient.spo2_scale": st.sampled_from([1.0, 2.0]),
                    "spo2_scale1.orange_at_or_below": st.sampled_from([93.0, 95.0]),
                    "news2.low_band_is_info": st.sampled_from([0.0, 1.0]),
                    "weight_gain_24h.enabled": st.sampled_from([0.0, 1.0]),
                    "hf_weight_missing.enabled": st.just(0.0),  # may not be disabled: stays on
                    "heart_rate.confirm": st.sampled_from([0.0, 1.0]),
                    "news2.confirm": st.sampled_from([0.0, 1.0]),
                    "spo2_covid.below_usual_points": st.sampled_from([float("nan"), 1.0]),
                    "spo2_drop_baseline.recent_hours": st.sampled_from([0.0, 24.0]),
                    "baseline_deviation.orange_at_or_above": st.sampled_from([1.0, 2.0]),
                    "news2_rising.rise_points": st.sampled_from([1.0, 2.0]),
                    "spo2_unconfirmed.within_minutes": st.sampled_from([0.0, 60.0]),
                },
            )
        )
        profiles.append(PatientProfile(p, programme, enrolled, p % 2, devices, overrides))
    batches = []
    clock = BASE
    for _ in range(draw(st.integers(1, 5))):
        clock += draw(st.integers(0, 36)) * HOUR
        rows = []
        for _ in range(draw(st.integers(1, 25))):
            p = draw(st.integers(1, n))
            vital = draw(st.sampled_from(KINDS))
            if vital.value_type is ValueType.GRADE:
                value = float(draw(st.integers(0, 4)))
            elif vital.value_type is ValueType.BOOLEAN:
                value = float(draw(st.booleans()))
            else:
                choices: list[float] = INTERESTING.get(vital.kind.value, [vital.low, vital.high])
                value = float(draw(st.sampled_from(choices)))
            back = draw(st.sampled_from([0, 0, 0, 10, 30, 59, 61, 180, 1440, 4320, 10080]))
            at = clock - back * 60_000_000 - draw(st.integers(0, 59)) * 1_000_000
            device = draw(st.sampled_from([p * 10, p * 10 + 1, None]))
            rows.append((p, vital.code, value, at, clock, device))
        batches.append(rows)
    sweeps = [clock + draw(st.integers(0, 72)) * HOUR for _ in range(draw(st.integers(1, 3)))]
    return profiles, batches, sweeps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohorts())
def test_parity_on_generated_cohorts(
    case: tuple[list[PatientProfile], list[list[Row]], list[int]],
) -> None:
    profiles, batches, sweeps = case
    both = Both.of(profiles)
    for rows in batches:
        both.batch(rows)
    for now in sorted(sweeps):
        both.sweep({0: now, 1: now - HOUR})


def test_disabled_and_non_disableable_rules() -> None:
    """A programme's switch turns a rule off; a non-transmission rule cannot be turned off."""
    weight = BY_KIND[next(v.kind for v in CATALOGUE if v.kind.value == "body_weight")].code
    profile = PatientProfile(
        1,
        Programme.HEART_FAILURE,
        BASE - 10 * DAY,
        0,
        [],
        {"hf_weight_missing.enabled": 0, "questionnaire_missed.enabled": 0},
    )
    both = Both.of([profile])
    rows: list[Row] = [
        (1, weight, 70.0, BASE - 30 * HOUR, BASE, None),
        (1, weight, 71.5, BASE, BASE, None),
    ]
    assert [f.rule_id for f in both.batch(rows)] == []  # +1.5 kg in 30 h: weight_gain_24h is off
    one_day = {(f.rule_id, f.severity) for f in both.sweep({0: BASE + DAY + 12 * HOUR})}
    three_days = {(f.rule_id, f.severity) for f in both.sweep({0: BASE + 3 * DAY + 12 * HOUR})}
    assert one_day == {("hf_weight_missing", 2)}  # questionnaire_missed is off for this patient
    assert three_days == {("hf_weight_missing", 3)}  # escalates to red on the third day
