"""Which fetched records the pipeline takes: each once, from where it was told to start,
and none past a gap the broker has not confirmed.

A rebalance replaces aiokafka's partition states while a fetch may be under way,
so what `getmany` returns around one can be stale (already taken, or taken
before the partition moved) or repeated. The cursor keeps the pipeline's own
next expected offset per partition, set by the seek at assignment, and takes a
record only at or past it. Partitions without one (between a revoke and the
next assignment's seek) yield nothing: they are read again from the seek.

A fetch may also begin past the expected offset. The log can have real gaps
(retention, compaction, transaction markers), but a broker can also answer a
fetch from the wrong place around a rebalance (tansu does, from the log end);
taking such records would make the skipped ones look durable. So the first
time a gap is seen at an offset, the records are left and the partition is read
again from that offset (`take` says where); a gap the broker repeats from
exactly there is real, and taken.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)

__all__ = ["IntakeCursor"]


class _Fetched(Protocol):
    @property
    def offset(self) -> int: ...


class IntakeCursor:
    def __init__(self) -> None:
        self._expected: dict[Any, int] = {}
        self._reread: dict[Any, int] = {}  # partitions read again after a gap, and from where

    def start(self, partition: Any, offset: int) -> None:
        """Take `partition`'s records from `offset` on (called with each seek)."""
        self._expected[partition] = offset
        self._reread.pop(partition, None)

    def stop_all(self) -> None:
        """Take nothing until the next `start` (a rebalance has begun)."""
        self._expected.clear()
        self._reread.clear()

    def take(self, fetched: Mapping[Any, Sequence[_Fetched]]) -> tuple[list[Any], dict[Any, int]]:
        """The records to take, and the partitions to seek back to re-read a gap."""
        taken: list[Any] = []
        seek_back: dict[Any, int] = {}
        for partition, batch in fetched.items():
            expected = self._expected.get(partition)
            if expected is None or not batch:
                continue
            if batch[0].offset < expected:
                batch = [r for r in batch if r.offset >= expected]
                if not batch:
                    continue
            elif batch[0].offset > expected:
                if self._reread.get(partition) != expected:
                    self._reread[partition] = expected
                    seek_back[partition] = expected
                    log.info(
                        "%s: fetch began at %d, not %d: reading again from %d",
                        partition,
                        batch[0].offset,
                        expected,
                        expected,
                    )
                    continue
                log.warning(
                    "%s: offsets %d..%d are not in the log (retention, compaction or "
                    "transaction markers)",
                    partition,
                    expected,
                    batch[0].offset - 1,
                )
            self._expected[partition] = batch[-1].offset + 1
            taken.extend(batch)
        return taken, seek_back
