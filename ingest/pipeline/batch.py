"""What one batch transaction makes durable, and the offsets it came from.

A batch carries, per Kafka partition, the span of offsets it covers. Nothing
commits an offset that is not in a written batch's spans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from devices.decode import Rejection
from ingest.pipeline.rows import ReadingRows
from ingest.pipeline.steps import BatchWork

__all__ = ["PartitionSpan", "WriteBatch"]


@dataclass(frozen=True, slots=True)
class PartitionSpan:
    """The records of one partition in a batch: offsets[0] .. next_offset - 1."""

    partition: int
    offsets: npt.NDArray[np.int64]  # every record offset, ascending

    @property
    def first_offset(self) -> int:
        return int(self.offsets[0])

    @property
    def next_offset(self) -> int:
        return int(self.offsets[-1]) + 1


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """Everything one transaction makes durable, and the offsets it may then commit."""

    topic: str
    spans: dict[int, PartitionSpan]
    rows: ReadingRows
    rejections: list[Rejection]
    readings_consumed: int
    work: tuple[BatchWork, ...] = ()  # the steps' parts of the transaction

    @classmethod
    def of_work(cls, topic: str, work: BatchWork) -> WriteBatch:
        """A transaction with no readings: a step's periodic work (a sweep's alerts)."""
        return cls(topic, {}, ReadingRows.empty(), [], 0, (work,))

    @property
    def messages(self) -> int:
        return sum(len(s.offsets) for s in self.spans.values())
