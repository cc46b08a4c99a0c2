"""The engine does not re-send a repeat firing (no more severe, within the repeat window)."""

from __future__ import annotations

import dataclasses

import numpy as np

from alerts.engine import Engine, PatientProfile
from alerts.programmes import load_config
from devices.catalogue import BY_KIND
from devices.catalogue import VitalKind as K
from devices.registry import Programme

MINUTE = 60_000_000
T0 = 1_795_000_000_000_000
HEART_RATE = BY_KIND[K.HEART_RATE].code


def heart_rate_candidates(engine: Engine, value: float, minutes: int) -> list[tuple[str, int]]:
    at = np.array([T0 + minutes * MINUTE], np.int64)
    candidates = engine.evaluate(
        np.array([1], np.int32), np.array([HEART_RATE], np.int16), np.array([value]), at, at
    )
    return [(c.rule_id, int(c.severity)) for c in candidates if c.rule_id == "heart_rate"]


def engine_with(repeat_minutes: int) -> Engine:
    config = dataclasses.replace(load_config(), repeat_window_us=repeat_minutes * MINUTE)
    engine = Engine(config)
    engine.add_patients([PatientProfile(1, Programme.COVID, T0 - 24 * 60 * MINUTE, 0)])
    return engine


def test_repeats_within_the_window_are_not_sent_again() -> None:
    engine = engine_with(15)
    assert heart_rate_candidates(engine, 115, 0) == [("heart_rate", 2)]
    assert heart_rate_candidates(engine, 118, 5) == []  # a repeat
    assert heart_rate_candidates(engine, 135, 6) == [("heart_rate", 3)]  # more severe
    assert heart_rate_candidates(engine, 115, 10) == []  # less severe, within the window
    assert heart_rate_candidates(engine, 116, 22) == [("heart_rate", 2)]  # 16 min after
    engine.reset()
    engine.add_patients([PatientProfile(1, Programme.COVID, T0 - 24 * 60 * MINUTE, 0)])
    assert heart_rate_candidates(engine, 116, 23) == [("heart_rate", 2)]  # state was reset


def test_without_a_window_every_firing_is_sent() -> None:
    engine = engine_with(0)
    sent = [heart_rate_candidates(engine, 115, minute) for minute in range(3)]
    assert sent == [[("heart_rate", 2)]] * 3
