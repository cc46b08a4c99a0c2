"""Dropping what an earlier transaction made durable, and the ledger entries it leaves."""

from __future__ import annotations

import numpy as np

from devices.contract import RejectReason
from devices.decode import Rejection
from ingest.pipeline.batch import PartitionSpan, WriteBatch
from ingest.pipeline.offsets import LedgerEntry, drop_durable
from ingest.pipeline.rows import ReadingRows


def batch(spans: dict[int, range], rejected: list[tuple[int, int]]) -> WriteBatch:
    """One reading per record of each span; a rejection per (partition, offset) given."""
    partition = np.concatenate([np.full(len(r), p, np.int32) for p, r in spans.items()])
    offset = np.concatenate([np.arange(r.start, r.stop, dtype=np.int64) for r in spans.values()])
    n = len(offset)
    rows = ReadingRows(
        patient_key=np.ones(n, np.int32),
        device_key=np.ones(n, np.int32),
        kind=np.ones(n, np.int16),
        value=np.full(n, 97.0),
        measured_at_us=np.arange(n, dtype=np.int64),
        source_partition=partition,
        source_offset=offset,
        reference_us=np.zeros(n, np.int64),
    )
    rejections = [
        Rejection("t", p, o, 0, b"k", b"{", None, RejectReason.INVALID_JSON, "bad")
        for p, o in rejected
    ]
    return WriteBatch(
        "t",
        {p: PartitionSpan(p, np.arange(r.start, r.stop, dtype=np.int64)) for p, r in spans.items()},
        rows,
        rejections,
        n,
    )


def test_nothing_durable_keeps_everything() -> None:
    rows, rejections, ledger = drop_durable(batch({0: range(0, 10)}, [(0, 3)]), {0: 0})
    assert len(rows) == 10
    assert len(rejections) == 1
    assert ledger == [LedgerEntry(0, 0, 10, 10, 10)]


def test_records_below_the_stored_offset_are_dropped_partition_by_partition() -> None:
    """A zombie's batch: partition 0 is half durable, partition 1 wholly, partition 2 not."""
    given = batch({0: range(0, 10), 1: range(0, 5), 2: range(7, 9)}, [(0, 2), (0, 8), (1, 1)])
    rows, rejections, ledger = drop_durable(given, {0: 5, 1: 5, 2: 7})
    assert sorted(
        zip(rows.source_partition.tolist(), rows.source_offset.tolist(), strict=True)
    ) == [
        *[(0, o) for o in range(5, 10)],
        (2, 7),
        (2, 8),
    ]
    assert [(r.partition, r.offset) for r in rejections] == [(0, 8)]
    # The ledger starts where the stored offset was: no gap and no overlap with earlier entries.
    assert ledger == [LedgerEntry(0, 5, 10, 5, 5), LedgerEntry(2, 7, 9, 2, 2)]
