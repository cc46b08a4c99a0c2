"""Only arrivals that may resolve a missing-data alert reach the lifecycle."""

from __future__ import annotations

import numpy as np

from alerts.awaited import AwaitedData
from devices.catalogue import BY_KIND
from devices.catalogue import VitalKind as K

WEIGHT = BY_KIND[K.BODY_WEIGHT].code
SPO2 = BY_KIND[K.SPO2].code


def arrivals(awaited: AwaitedData, *rows: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    patient, kind, at = (np.array(column) for column in zip(*rows, strict=True))
    got = awaited.arrivals(patient.astype(np.int32), kind.astype(np.int16), at.astype(np.int64))
    return list(zip(got.patient_key, got.kind, got.latest_us, strict=True))


def test_only_awaited_patients_arrivals_are_handed_on_until_answered() -> None:
    awaited = AwaitedData()
    assert arrivals(awaited, (1, WEIGHT, 100)) == []  # nothing awaited: nothing handed on
    awaited.expect(1, "hf_weight_missing", 1_000)
    batch = [(1, WEIGHT, 500), (1, WEIGHT, 400), (2, WEIGHT, 900)]
    assert arrivals(awaited, *batch) == [(1, WEIGHT, 500)]  # the latest, awaited patient only
    assert len(awaited) == 1  # measured before the data was due: still awaited
    assert arrivals(awaited, (1, SPO2, 2_000)) == [(1, SPO2, 2_000)]
    assert len(awaited) == 1  # SpO2 does not answer a missing weight
    assert arrivals(awaited, (1, WEIGHT, 1_000)) == [(1, WEIGHT, 1_000)]
    assert len(awaited) == 0
    assert arrivals(awaited, (1, WEIGHT, 3_000)) == []
