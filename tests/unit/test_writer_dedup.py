"""Repeats within one batch (same device, kind and time) are offered to the table once."""

from __future__ import annotations

import numpy as np

from ingest.pipeline.rows import ReadingRows
from ingest.pipeline.writer import first_of_each_reading


def rows(device: list[int], kind: list[int], at: list[int]) -> ReadingRows:
    n = len(device)
    return ReadingRows(
        patient_key=np.ones(n, np.int32),
        device_key=np.array(device, np.int32),
        kind=np.array(kind, np.int16),
        value=np.arange(n, dtype=np.float64),  # tells the copies apart
        measured_at_us=np.array(at, np.int64),
        source_partition=np.zeros(n, np.int32),
        source_offset=np.arange(n, dtype=np.int64),
        reference_us=np.zeros(n, np.int64),
    )


def test_the_first_of_repeated_readings_is_kept_in_arrival_order() -> None:
    given = rows(device=[1, 2, 1, 1, 2], kind=[5, 5, 5, 6, 5], at=[10, 10, 10, 10, 11])
    kept = first_of_each_reading(given)
    assert kept.value.tolist() == [0.0, 1.0, 3.0, 4.0]  # the third is the first's repeat


def test_distinct_readings_come_back_as_they_were() -> None:
    given = rows(device=[1, 1, 1], kind=[5, 6, 5], at=[10, 10, 11])
    assert first_of_each_reading(given) is given
