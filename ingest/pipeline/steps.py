"""The pipeline step protocol: work that rides along with the pipeline's own.

The pipeline itself decodes records, resolves registry keys and writes the
readings, dead letters and offsets of each batch in one transaction. A *step*
adds work of its own to that: it sees each batch's readings before the
transaction, contributes to the transaction, keeps state for the partitions
this member owns, and may make transactions of its own between batches. The
alert rules are such a step (`alerts.step.AlertStep`). A pipeline is composed
with the steps it runs (ingest.service): a pipeline without alerts has no
alert step, not one that is switched off.

Order. A member calls its steps one call at a time, never concurrently:
`assigned`, then `prepare` for each batch in batch order, interleaved with
`tick`, then `revoked`; the writer applies the work in the order it was
made, each in its own transaction. `prepare` of one batch may run while the
previous batch is being written.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ingest.pipeline.rows import ReadingRows
from ingest.platform import Connection

__all__ = ["BatchWork", "PipelineStep", "Written"]


@dataclass(frozen=True, slots=True)
class Written:
    """What the batch transaction wrote before the steps' work."""

    stored: Mapping[int, int]  # Kafka partition -> readings inserted now (not duplicates)


class BatchWork(Protocol):
    """A step's part of one transaction."""

    async def apply(self, conn: Connection, written: Written) -> None:
        """Write the work, inside the transaction.

        Called by the writer after the batch's readings, dead letters and
        offsets, before COMMIT, on the writer's connection: no transaction
        control, no long computation (that belongs in `prepare`).

        Idempotent under replay: the same records may come again (after a crash
        before the Kafka commit), and a member that lost its partitions without
        knowing it may write a batch whose records are already durable (then
        `written.stored` counts nothing for their partitions). The transaction
        may also be rolled back and retried after a transient error: `apply` is
        then called again on the same object, so keep nothing from an earlier
        call. An exception aborts the transaction: a transient database error
        has it retried, any other stops the service.
        """
        ...

    def committed(self) -> None:
        """The transaction that applied this work has committed: observe it (metrics,
        bookkeeping that must follow durable state only). Called once; must not fail."""
        ...


class PipelineStep(Protocol):
    name: str  # for logs: "alerts"

    async def assigned(
        self, partitions: Sequence[int], partition_count: int, continuous: Collection[int]
    ) -> None:
        """This member now owns `partitions` of the readings topic (of
        `partition_count`); `continuous`: the partitions it held until this rebalance
        with nothing written by another member since, whose state is still whole.

        Called after the rebalance, before the pipeline sets any partition's position,
        so before any record is taken: load the state they need from PostgreSQL (that of
        continuous partitions may be kept). May take as long as that takes (the member
        heartbeats meanwhile), and may be cancelled half-way by the next rebalance: the
        next call must not build on a half-loaded state. Runs under the pipeline's retry
        policy: a transient database error is retried, any other stops the service.
        """
        ...

    def revoked(self, drained: bool) -> None:
        """The member's partitions are being taken away (a rebalance has begun).

        Called after the pipeline has drained, so no `prepare`, `tick` or `apply` is
        under way. `drained`: every batch taken is durable. If not (the drain timed
        out), a batch prepared against the state may never commit: forget it all.
        """
        ...

    async def prepare(self, rows: ReadingRows) -> BatchWork:
        """A batch's accepted readings, before its transaction: the work it will apply.

        Called in the prepare stage once per batch, in batch order, also for a
        batch without readings (`rows` empty: only rejections). May read
        PostgreSQL (on connections of its own) but writes nothing: nothing is
        durable before the batch is. CPU-heavy work belongs here, in a thread if
        long, so the event loop keeps fetching and writing meanwhile. Retried
        like `assigned`.
        """
        ...

    async def tick(self, now_us: Callable[[], Mapping[int, int]]) -> BatchWork | None:
        """Between batches, about once a second: periodic work (a sweep, a refresh).

        Only while partitions are assigned. Work returned is applied in a
        transaction of its own (no readings, no offsets), in order with the
        batches'. `now_us()` gives each owned partition's "now" in µs: the wall
        clock when the partition is caught up, else the time of its latest
        record taken (a backlog is not silence). Retried like `assigned`.
        """
        ...
