"""NEWS2: every band edge of the RCP 2017 chart (docs/clinical.md §3B), both SpO2 scales."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from alerts.engine import Engine, PatientProfile
from alerts.news2 import (
    score_pulse,
    score_respiration,
    score_spo2,
    score_systolic,
    score_temperature,
)
from alerts.programmes import load_config
from devices.catalogue import BY_KIND
from devices.catalogue import VitalKind as K
from devices.registry import Programme

# (value, score) on each side of every edge of the chart.
RESPIRATION = [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3)]
SPO2_SCALE1 = [(91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)]
SPO2_SCALE2_AIR = [
    (83, 3),
    (84, 2),
    (85, 2),
    (86, 1),
    (87, 1),
    (88, 0),
    (92, 0),
    (93, 0),
    (97, 0),
    (100, 0),
]
SPO2_SCALE2_OXYGEN = [
    (83, 3),
    (84, 2),
    (87, 1),
    (88, 0),
    (92, 0),
    (93, 1),
    (94, 1),
    (95, 2),
    (96, 2),
    (97, 3),
    (100, 3),
]
SYSTOLIC = [(90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)]
PULSE = [
    (40, 3),
    (41, 1),
    (50, 1),
    (51, 0),
    (90, 0),
    (91, 1),
    (110, 1),
    (111, 2),
    (130, 2),
    (131, 3),
]
TEMPERATURE = [
    (35.0, 3),
    (35.1, 1),
    (36.0, 1),
    (36.1, 0),
    (38.0, 0),
    (38.1, 1),
    (39.0, 1),
    (39.1, 2),
]


def scores(function: object, table: Sequence[tuple[float, int]], *extra: object) -> None:
    values = np.array([v for v, _ in table], dtype=np.float64)
    got = function(values, *extra)  # type: ignore[operator]
    assert got.tolist() == [float(s) for _, s in table]


def test_respiration_bands() -> None:
    scores(score_respiration, RESPIRATION)


def test_systolic_bands() -> None:
    scores(score_systolic, SYSTOLIC)


def test_pulse_bands() -> None:
    scores(score_pulse, PULSE)


def test_temperature_bands() -> None:
    scores(score_temperature, TEMPERATURE)


@pytest.mark.parametrize(
    ("scale", "oxygen", "table"),
    [
        (1, False, SPO2_SCALE1),
        (1, True, SPO2_SCALE1),
        (2, False, SPO2_SCALE2_AIR),
        (2, True, SPO2_SCALE2_OXYGEN),
    ],
)
def test_spo2_bands(scale: int, oxygen: bool, table: Sequence[tuple[float, int]]) -> None:
    n = len(table)
    scores(score_spo2, table, np.full(n, float(scale)), np.full(n, oxygen))


NOW = 1_795_000_000_000_000
HOUR = 3_600_000_000


def news2_of(readings: dict[K, float], scale: int = 1) -> tuple[int, dict[str, object]] | None:
    """The NEWS2 candidate (severity, explanation values) for one patient's readings."""
    engine = Engine(load_config())
    overrides = {"patient.spo2_scale": float(scale)}
    engine.add_patients([PatientProfile(1, Programme.COVID, NOW - 24 * HOUR, 0, (), overrides)])
    kinds = list(readings)
    n = len(kinds)
    candidates = engine.evaluate(
        np.ones(n, np.int32),
        np.array([BY_KIND[k].code for k in kinds], np.int16),
        np.array([readings[k] for k in kinds]),
        np.full(n, NOW, np.int64),
        np.full(n, NOW, np.int64),
    )
    found = [c for c in candidates if c.rule_id == "news2"]
    return (int(found[0].severity), found[0].explanation["values"]) if found else None


NORMAL = {
    K.RESPIRATORY_RATE: 16,
    K.SPO2: 97,
    K.ON_OXYGEN: 0,
    K.SYSTOLIC_BP: 120,
    K.HEART_RATE: 70,
    K.NEW_CONFUSION: 0,
    K.BODY_TEMPERATURE: 37.0,
}


def test_a_normal_patient_raises_nothing() -> None:
    assert news2_of(NORMAL) is None


def test_medium_band_is_orange_and_high_band_red() -> None:
    medium = NORMAL | {K.RESPIRATORY_RATE: 22, K.HEART_RATE: 112, K.BODY_TEMPERATURE: 38.5}
    severity, values = news2_of(medium)  # type: ignore[misc]
    assert (severity, values["score"]) == (2, 5)
    high = medium | {K.SPO2: 93}
    severity, values = news2_of(high)  # type: ignore[misc]
    assert (severity, values["score"], values["complete"]) == (3, 7, 1.0)


def test_a_single_parameter_at_3_is_orange() -> None:
    severity, values = news2_of(NORMAL | {K.NEW_CONFUSION: 1})  # type: ignore[misc]
    assert (severity, values["score"], values["component_consciousness"]) == (2, 3, 3)


def test_oxygen_adds_2_and_selects_the_upper_scale_2_bands() -> None:
    on_oxygen = NORMAL | {K.ON_OXYGEN: 1, K.SPO2: 97, K.RESPIRATORY_RATE: 21}
    severity, values = news2_of(on_oxygen, scale=2)  # type: ignore[misc]
    # oxygen 2 + SpO2 97 on O2 (scale 2) 3 + respiration 21 2 = 7
    assert (severity, values["score"], values["component_spo2"]) == (3, 7, 3)


def test_a_partial_score_is_raised_and_marked_incomplete() -> None:
    severity, values = news2_of({K.RESPIRATORY_RATE: 26, K.HEART_RATE: 135})  # type: ignore[misc]
    assert (severity, values["score"], values["complete"]) == (2, 6, 0.0)
    assert values["parameters_present"] == 2
    assert values["component_temperature"] is None
