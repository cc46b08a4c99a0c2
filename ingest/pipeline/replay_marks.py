"""Dead letters in the batch transaction: replays marked, unknown devices parked.

The prepare stage finds the replayed records of each poll (`ReplayedPoll`: records
with a replay tag, ingest.pipeline.replays). For them it forgets the registry
cache's negative entries (the enrolment that made the replay worth it must be
seen), judges their readings' currency from the time of the replay request (an
old reading updates history and raises no current-value alert), and keeps, per
record, its accepted readings (with their index in the message) and its
rejections. `DeadLetterWork` is then part of the batch's transaction, after the
readings, dead letters and offsets:

- each replayed dead letter is marked once (when, who asked, the outcome, the new
  reason if rejected again, the record that carried the replay). Whether a reading
  was stored by this replay is read back by its primary key and provenance: the
  row is this replay's if its source partition and offset are the replay record's;
- the dead letters the replay itself produced (rejected again) point to the one
  replayed (`replay_of`), and stay parked, within the original's window, if they
  are still `unknown_device`;
- the batch's other `unknown_device` dead letters are parked for `window_s`.

A replayed record already durable (dropped by the fence) changes nothing: its
dead letters are already marked. Nothing here runs for a batch with neither.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from devices.contract import RejectReason
from devices.decode import DecodedBatch, Rejection
from ingest.pipeline.decode_pool import RecordColumns
from ingest.pipeline.metrics import IngestMetrics
from ingest.pipeline.replays import Outcome, ReadingFate, ReplayResult, ReplayTag, judge
from ingest.pipeline.rows import ReadingRows
from ingest.pipeline.steps import Written
from ingest.platform import Clock, Connection

__all__ = ["DeadLetterWork", "ReplayedPoll", "ReplayedRecord"]

_RANK = {Outcome.STORED: 0, Outcome.DUPLICATE: 1, Outcome.REJECTED: 2}


@dataclass(frozen=True, slots=True)
class ReplayedRecord:
    """A record carrying a replay: its accepted readings and its rejections."""

    tag: ReplayTag
    topic: str
    partition: int
    offset: int
    value: bytes | None
    reading_index: npt.NDArray[np.int32]
    patient_key: npt.NDArray[np.int32]
    device_key: npt.NDArray[np.int32]
    kind: npt.NDArray[np.int16]
    measured_at_us: npt.NDArray[np.int64]
    rejections: list[tuple[int | None, str, str]]  # (reading index, reason, detail)


class ReplayedPoll:
    """The replayed records of one poll (made only for a poll that has some)."""

    def __init__(self, columns: RecordColumns, decoded: DecodedBatch) -> None:
        assert columns.replay is not None
        self._columns = columns
        self._tags = columns.replay
        is_replay = np.array([t is not None for t in self._tags], np.bool_)
        self._is_replay = is_replay
        accepted = decoded.messages
        replayed_message = is_replay[accepted.record_index]
        self.pairs = [
            (accepted.patient_id[i], accepted.device_id[i])
            for i in np.flatnonzero(replayed_message).tolist()
        ]
        self.records = int(is_replay.sum())

    @classmethod
    def of(cls, columns: RecordColumns, decoded: DecodedBatch) -> ReplayedPoll | None:
        return None if columns.replay is None else cls(columns, decoded)

    def live(self, record_of_row: npt.NDArray[np.int32]) -> int:
        """Records that gave a row, replays not counted (the reject-ratio guard judges the
        gateways, not an operator replaying what is still refused)."""
        records = np.unique(record_of_row)
        return int((~self._is_replay[records]).sum())

    def as_of_replay(
        self, rows: ReadingRows, record_of_row: npt.NDArray[np.int32], now_ms: int
    ) -> ReadingRows:
        """Replayed readings are judged current or not at the time of the replay request
        (never later than now): the record keeps its original timestamp, by which the
        decoder judged it exactly as the first time."""
        requested_ms = np.array(
            [min(t.requested_at_ms, now_ms) if t is not None else 0 for t in self._tags],
            np.int64,
        )
        replay_reference = requested_ms[record_of_row] * 1000
        return replace(rows, reference_us=np.maximum(rows.reference_us, replay_reference))

    def replayed(
        self,
        rows: ReadingRows,
        record_of_row: npt.NDArray[np.int32],
        reading_index: npt.NDArray[np.int32],
        rejections: Sequence[Rejection],
    ) -> list[ReplayedRecord]:
        columns = self._columns
        rejected: dict[tuple[int, int], list[tuple[int | None, str, str]]] = {}
        for r in rejections:
            where = (r.partition, r.offset)
            rejected.setdefault(where, []).append((r.reading_index, r.reason.value, r.detail))
        out = []
        for i in np.flatnonzero(self._is_replay).tolist():
            tag = self._tags[i]
            assert tag is not None
            mine = record_of_row == i
            partition, offset = columns.partition[i], columns.offset[i]
            out.append(
                ReplayedRecord(
                    tag,
                    columns.topic,
                    partition,
                    offset,
                    columns.value[i],
                    reading_index[mine],
                    rows.patient_key[mine],
                    rows.device_key[mine],
                    rows.kind[mine],
                    rows.measured_at_us[mine],
                    rejected.get((partition, offset), []),
                )
            )
        return out


class DeadLetterWork:
    """The batch transaction's dead-letter work: mark replays, park unknown devices."""

    def __init__(
        self,
        replayed: Sequence[ReplayedRecord],
        park: Sequence[Rejection],
        *,
        window_s: float,
        clock: Clock,
        metrics: IngestMetrics,
    ) -> None:
        self._replayed = replayed
        self._park = park
        self._window_s = window_s
        self._clock = clock
        self._metrics = metrics
        self.marked: Counter[str] = Counter()
        self.parked = 0

    @classmethod
    def of(
        cls,
        replayed: Sequence[ReplayedRecord],
        rejections: Sequence[Rejection],
        *,
        window_s: float,
        clock: Clock,
        metrics: IngestMetrics,
    ) -> DeadLetterWork | None:
        """The work of a batch, or None when it has neither replays nor devices to park."""
        replays = {(r.partition, r.offset) for r in replayed}
        park = [
            r
            for r in rejections
            if r.reason is RejectReason.UNKNOWN_DEVICE
            and r.patient_id is not None
            and (r.partition, r.offset) not in replays
        ]
        if window_s <= 0:
            park = []
        if not replayed and not park:
            return None
        return cls(replayed, park, window_s=window_s, clock=clock, metrics=metrics)

    async def apply(self, conn: Connection, written: Written) -> None:
        self.marked = Counter()
        self.parked = 0
        if self._replayed:
            await self._mark(conn)
        if self._park:
            self.parked = await _park(conn, self._park, self._window_s)

    def committed(self) -> None:
        self._metrics.dead_letters_parked.inc(self.parked)
        for outcome, n in self.marked.items():
            self._metrics.dead_letters_replayed.labels(outcome).inc(n)

    async def _mark(self, conn: Connection) -> None:
        records = self._replayed
        stored = await _stored_now(conn, records)
        ids = [i for r in records for i in r.tag.dead_letters]
        values = [r.value for r in records for _ in r.tag.dead_letters]
        # Only a dead letter whose original bytes these are: a tag cannot mark another.
        letters = {
            row["id"]: row["reading_index"]
            for row in await conn.fetch(
                """
                SELECT d.id, d.reading_index FROM dead_letters d
                JOIN unnest($1::bigint[], $2::bytea[]) AS x(id, v) ON d.id = x.id
                WHERE d.record_value IS NOT DISTINCT FROM x.v
                """,
                ids,
                values,
            )
        }
        best: dict[int, tuple[ReplayResult, ReplayedRecord]] = {}
        born: list[tuple[str, int, int, int | None, int]] = []
        for n, record in enumerate(records):
            fates = [
                ReadingFate(int(index), bool(kept))
                for index, kept in zip(record.reading_index, stored[n], strict=True)
            ]
            mine = [i for i in record.tag.dead_letters if i in letters]
            for letter in mine:
                result = judge(letters[letter], fates, record.rejections)
                previous = best.get(letter)
                if previous is None or _RANK[result.outcome] < _RANK[previous[0].outcome]:
                    best[letter] = (result, record)
            for index, _, _ in record.rejections:
                same = [i for i in mine if letters[i] == index]
                if same or mine:
                    of = (same or mine)[0]
                    born.append((record.topic, record.partition, record.offset, index, of))
        if best:
            marked = await conn.fetch(
                """
                UPDATE dead_letters d SET replayed_at = to_timestamp($8 / 1e6),
                    replayed_by = x.by, replay_outcome = x.outcome, replay_reason = x.reason,
                    replay_detail = x.detail, replay_partition = x.p, replay_offset = x.o
                FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                            $6::int[], $7::bigint[]) AS x(id, by, outcome, reason, detail, p, o)
                WHERE d.id = x.id AND d.replayed_at IS NULL
                RETURNING d.replay_outcome
                """,
                list(best),
                [record.tag.requested_by for _, record in best.values()],
                [result.outcome.value for result, _ in best.values()],
                [result.reason for result, _ in best.values()],
                [result.detail for result, _ in best.values()],
                [record.partition for _, record in best.values()],
                [record.offset for _, record in best.values()],
                self._clock.now_ms() * 1000,
            )
            self.marked = Counter(r["replay_outcome"] for r in marked)
        if born:
            await conn.execute(
                """
                UPDATE dead_letters n SET replay_of = x.of,
                    parked_until = CASE WHEN n.reason = 'unknown_device'
                                         AND o.park_expired_at IS NULL THEN o.parked_until END
                FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $5::bigint[])
                     AS x(t, p, off, i, of)
                JOIN dead_letters o ON o.id = x.of
                WHERE n.topic = x.t AND n.partition = x.p AND n."offset" = x.off
                  AND n.reading_index IS NOT DISTINCT FROM x.i AND n.replay_of IS NULL
                """,
                *map(list, zip(*born, strict=True)),
            )


async def _stored_now(conn: Connection, records: Sequence[ReplayedRecord]) -> list[list[bool]]:
    """Per record, per accepted reading: stored by this record (the row's provenance is
    the record's partition and offset), or not (it was already there)."""
    sizes = [len(r.kind) for r in records]
    if not sum(sizes):
        return [[] for _ in records]

    def column(name: str) -> list[int]:
        values: list[int] = np.concatenate([getattr(r, name) for r in records]).tolist()
        return values

    rows = await conn.fetch(
        """
        SELECT x.n FROM unnest($1::int[], $2::int[], $3::smallint[], $4::bigint[], $5::int[],
                               $6::bigint[]) WITH ORDINALITY AS x(pk, dk, k, at, p, o, n)
        JOIN readings r ON r.patient_key = x.pk AND r.kind = x.k AND r.device_key = x.dk
             AND r.measured_at = timestamptz 'epoch' + x.at * interval '1 microsecond'
        WHERE r.source_partition = x.p AND r.source_offset = x.o
        """,
        column("patient_key"),
        column("device_key"),
        column("kind"),
        column("measured_at_us"),
        [r.partition for r, size in zip(records, sizes, strict=True) for _ in range(size)],
        [r.offset for r, size in zip(records, sizes, strict=True) for _ in range(size)],
    )
    kept = np.zeros(sum(sizes), np.bool_)
    kept[[r["n"] - 1 for r in rows]] = True
    bounds = np.cumsum(sizes)[:-1]
    return [part.tolist() for part in np.split(kept, bounds)]


async def _park(conn: Connection, rejections: Sequence[Rejection], window_s: float) -> int:
    """Park the batch's unknown-device dead letters; how many were parked now."""
    status = await conn.execute(
        """
        UPDATE dead_letters SET parked_until = rejected_at + make_interval(secs => $4)
        FROM unnest($1::text[], $2::int[], $3::bigint[]) AS x(t, p, o)
        WHERE topic = x.t AND partition = x.p AND "offset" = x.o
          AND reason = 'unknown_device' AND patient_id IS NOT NULL AND parked_until IS NULL
          AND replay_of IS NULL AND replayed_at IS NULL AND park_expired_at IS NULL
        """,
        [r.topic for r in rejections],
        [r.partition for r in rejections],
        [r.offset for r in rejections],
        window_s,
    )
    return int(status.split()[-1])
