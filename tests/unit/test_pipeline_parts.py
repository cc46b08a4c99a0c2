"""Pure parts of the pipeline: the reject-ratio guard, the COPY encoder, array histograms."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from ingest.pipeline.cursor import IntakeCursor
from ingest.pipeline.metrics import ArrayHistogram
from ingest.pipeline.pgcopy import PG_EPOCH_US, encode_readings
from ingest.pipeline.rows import ReadingRows
from ingest.pipeline.stages import RejectGuard
from ingest.platform import RejectRatioError


def test_guard_tolerates_rejections_below_the_limit() -> None:
    guard = RejectGuard(limit=0.5, window=100)
    for _ in range(50):
        guard.observe(messages=10, rejected=4)


def test_guard_waits_for_enough_messages_before_judging() -> None:
    guard = RejectGuard(limit=0.5, window=100)
    guard.observe(messages=50, rejected=50)  # half a window of poison: not yet a verdict
    with pytest.raises(RejectRatioError, match="100 of the last 100"):
        guard.observe(messages=50, rejected=50)


def test_guard_forgets_old_batches() -> None:
    """A storm long past does not count against the present."""
    guard = RejectGuard(limit=0.5, window=100)
    guard.observe(messages=40, rejected=40)
    for _ in range(20):
        guard.observe(messages=10, rejected=0)
    guard.observe(messages=30, rejected=30)


def rows(n: int) -> ReadingRows:
    return ReadingRows(
        patient_key=np.arange(n, dtype=np.int32),
        device_key=np.arange(n, dtype=np.int32) + 100,
        kind=np.full(n, 1, np.int16),
        value=np.linspace(90, 99, n),
        measured_at_us=np.full(n, PG_EPOCH_US + 1, np.int64),
        source_partition=np.full(n, 3, np.int32),
        source_offset=np.arange(n, dtype=np.int64),
        reference_us=np.full(n, PG_EPOCH_US + 2, np.int64),
    )


def test_copy_payload_has_the_binary_layout() -> None:
    payload = encode_readings(rows(2), received_at_us=PG_EPOCH_US + 2)
    assert payload.startswith(b"PGCOPY\n\xff\r\n\x00")
    assert payload.endswith(b"\xff\xff")
    body = payload[19:-2]
    row_size = 2 + 8 * 4 + (4 + 4 + 2 + 8 + 8 + 8 + 4 + 8)
    assert len(body) == 2 * row_size
    fields, length, patient = struct.unpack_from(">hii", body, 0)
    assert (fields, length, patient) == (8, 4, 0)
    measured = struct.unpack_from(">q", body, 2 + 4 + 4 + 4 + 4 + 4 + 2 + 4 + 8 + 4)[0]
    assert measured == 1


def test_array_histogram_matches_the_client_histogram() -> None:
    """Feeding a whole array gives what observing each value would."""
    values = np.random.default_rng(7).exponential(1.0, 5000)
    values[:10] = [0.05, 0.1, 1.0, 2.0, 0.0, 300.0, 1e6, 0.049, 0.051, 86_400.0]
    ours = CollectorRegistry()
    theirs = CollectorRegistry()
    buckets = (0.05, 0.1, 0.5, 1.0, 2.0, 300.0)
    ArrayHistogram("x_seconds", "x", buckets, ours).observe_many(values)
    reference = Histogram("x_seconds", "x", buckets=buckets, registry=theirs)
    for v in values:
        reference.observe(float(v))
    for le in [*map(str, buckets), "+Inf"]:
        labels = {"le": le}
        assert ours.get_sample_value("x_seconds_bucket", labels) == theirs.get_sample_value(
            "x_seconds_bucket", labels
        )
    assert ours.get_sample_value("x_seconds_sum") == pytest.approx(
        theirs.get_sample_value("x_seconds_sum")
    )
    assert ours.get_sample_value("x_seconds_count") == 5000


class _R:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def offsets(taken: tuple[list[_R], dict[str, int]]) -> list[int]:
    records, seek_back = taken
    assert seek_back == {}
    return [r.offset for r in records]


def test_cursor_takes_each_record_once_from_its_start() -> None:
    cursor = IntakeCursor()
    cursor.start("p0", 10)
    assert offsets(cursor.take({"p0": [_R(8), _R(9), _R(10), _R(11)]})) == [10, 11]
    assert offsets(cursor.take({"p0": [_R(10), _R(11), _R(12)]})) == [12]  # a repeat


def test_cursor_reads_a_gap_again_before_believing_it() -> None:
    cursor = IntakeCursor()
    cursor.start("p0", 10)
    cursor.start("p1", 0)
    # A fetch answered from the wrong place: nothing taken, p0 is read again from 10.
    taken, seek_back = cursor.take({"p0": [_R(554)], "p1": [_R(0)]})
    assert [r.offset for r in taken] == [0]
    assert seek_back == {"p0": 10}
    assert offsets(cursor.take({"p0": [_R(10), _R(11)]})) == [10, 11]
    # A real gap (transaction markers) is repeated from exactly there, then taken.
    assert cursor.take({"p0": [_R(15)]}) == ([], {"p0": 12})
    assert offsets(cursor.take({"p0": [_R(15), _R(16)]})) == [15, 16]
    # A restart forgets what was re-read.
    cursor.start("p0", 20)
    assert cursor.take({"p0": [_R(22)]}) == ([], {"p0": 20})


def test_cursor_takes_nothing_between_a_revoke_and_the_next_seek() -> None:
    cursor = IntakeCursor()
    cursor.start("p0", 0)
    cursor.stop_all()
    assert cursor.take({"p0": [_R(0)], "p1": [_R(0)]}) == ([], {})
    cursor.start("p1", 5)
    assert offsets(cursor.take({"p0": [_R(1)], "p1": [_R(5)]})) == [5]
