"""Which fetched records the pipeline takes: each once, from where it was told to start.

A rebalance replaces aiokafka's partition states while a fetch may be under way,
so what `getmany` returns around one can be stale (already taken, or taken
before the partition moved) or repeated. The cursor keeps the pipeline's own
next expected offset per partition, set by the seek at assignment, and takes a
record only at or past it. Partitions without one (between a revoke and the
next assignment's seek) yield nothing: they are read again from the seek.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["IntakeCursor"]


class _Fetched(Protocol):
    @property
    def offset(self) -> int: ...


class IntakeCursor:
    def __init__(self) -> None:
        self._expected: dict[Any, int] = {}

    def start(self, partition: Any, offset: int) -> None:
        """Take `partition`'s records from `offset` on (called with each seek)."""
        self._expected[partition] = offset

    def stop_all(self) -> None:
        """Take nothing until the next `start` (a rebalance has begun)."""
        self._expected.clear()

    def take(self, fetched: Mapping[Any, Sequence[_Fetched]]) -> list[Any]:
        taken: list[Any] = []
        for partition, batch in fetched.items():
            expected = self._expected.get(partition)
            if expected is None or not batch:
                continue
            if batch[0].offset < expected:
                batch = [r for r in batch if r.offset >= expected]
                if not batch:
                    continue
            self._expected[partition] = batch[-1].offset + 1
            taken.extend(batch)
        return taken
