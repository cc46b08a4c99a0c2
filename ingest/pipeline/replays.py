"""What a replayed record carries, and what became of each dead letter it replays.

A replay re-produces a dead letter's original record (key, bytes, content-type,
timestamp) to the readings topic with a *replay tag* in its headers: the dead
letters it replays, who asked and when. The member that owns the partition
decodes, resolves, evaluates and writes it like any record; in the same batch
transaction it marks each of those dead letters with its outcome, judged here
(`judge`) from what became of the record's readings. `telemon dead-letters
replay --dry-run` judges with the same function from what would become of them.

docs/adr/0004-dead-letter-replay.md says why replays go through Kafka.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "REPLAY_AT_HEADER",
    "REPLAY_BY_HEADER",
    "REPLAY_HEADER",
    "REPLAY_SOURCE_HEADER",
    "Outcome",
    "ReadingFate",
    "ReplayResult",
    "ReplayTag",
    "judge",
]

REPLAY_HEADER = "telemon.replay.dead_letters"  # the dead letters' ids: "12,13"
REPLAY_BY_HEADER = "telemon.replay.requested_by"  # "operator:alice", "telemon:parking"
REPLAY_AT_HEADER = "telemon.replay.requested_at"  # ms since the Unix epoch
REPLAY_SOURCE_HEADER = "telemon.replay.source"  # where the original was: topic/partition/offset


@dataclass(frozen=True, slots=True)
class ReplayTag:
    """Which dead letters a record replays, who asked and when."""

    dead_letters: tuple[int, ...]
    requested_by: str
    requested_at_ms: int

    def headers(self, source: str) -> list[tuple[str, bytes]]:
        return [
            (REPLAY_HEADER, ",".join(map(str, self.dead_letters)).encode()),
            (REPLAY_BY_HEADER, self.requested_by.encode()),
            (REPLAY_AT_HEADER, str(self.requested_at_ms).encode()),
            (REPLAY_SOURCE_HEADER, source.encode()),
        ]

    @classmethod
    def of(cls, headers: Sequence[tuple[str, bytes]]) -> ReplayTag | None:
        """The tag in a record's headers; None if it has none, or none that makes sense
        (such a record is then an ordinary one: it marks nothing)."""
        found = dict(headers)
        ids = found.get(REPLAY_HEADER)
        if ids is None:
            return None
        try:
            dead_letters = tuple(int(i) for i in ids.decode().split(","))
            at_ms = int(found.get(REPLAY_AT_HEADER, b"0").decode())
            by = found.get(REPLAY_BY_HEADER, b"").decode()
        except (UnicodeDecodeError, ValueError):
            return None
        return cls(dead_letters, by or "unknown", at_ms) if dead_letters else None


class Outcome(StrEnum):
    STORED = "stored"  # the reading (or one of the message's) was stored by the replay
    DUPLICATE = "duplicate"  # already stored (a gateway's re-send, an earlier replay)
    REJECTED = "rejected"  # rejected again: replay_reason says why


@dataclass(frozen=True, slots=True)
class ReadingFate:
    """One accepted reading of the replayed record, and whether the replay stored it."""

    reading_index: int
    stored: bool


@dataclass(frozen=True, slots=True)
class ReplayResult:
    outcome: Outcome
    reason: str | None  # rejected again: the reason
    detail: str


def judge(
    reading_index: int | None,
    readings: Sequence[ReadingFate],
    rejections: Sequence[tuple[int | None, str, str]],
) -> ReplayResult:
    """The outcome for a dead letter of one reading (`reading_index`) or of the whole
    message (None), from the replayed record's accepted readings and its rejections
    ((reading index or None, reason, detail)), whole-message ones first."""
    whole = [r for r in rejections if r[0] is None]
    if reading_index is not None:
        own = [r for r in rejections if r[0] == reading_index]
        if own:
            return ReplayResult(Outcome.REJECTED, own[0][1], own[0][2])
        fate = next((f for f in readings if f.reading_index == reading_index), None)
        if fate is not None:
            return _stored_or_duplicate(fate.stored, f"reading {reading_index}")
        if whole:
            return ReplayResult(Outcome.REJECTED, whole[0][1], whole[0][2])
        return ReplayResult(
            Outcome.REJECTED, None, f"reading {reading_index} is not in the replayed record"
        )
    stored = sum(f.stored for f in readings)
    duplicates = len(readings) - stored
    ordered = whole + [r for r in rejections if r[0] is not None]
    counts = f"{stored} stored, {duplicates} duplicate, {len(ordered)} rejected again"
    if stored:
        reasons = sorted({r[1] for r in ordered})
        detail = counts + (f" ({', '.join(reasons)})" if reasons else "")
        return ReplayResult(Outcome.STORED, None, detail)
    if ordered:
        return ReplayResult(Outcome.REJECTED, ordered[0][1], ordered[0][2])
    if duplicates:
        return ReplayResult(Outcome.DUPLICATE, None, counts)
    return ReplayResult(Outcome.REJECTED, None, "the replayed record holds no reading")


def _stored_or_duplicate(stored: bool, what: str) -> ReplayResult:
    if stored:
        return ReplayResult(Outcome.STORED, None, f"{what} stored")
    return ReplayResult(Outcome.DUPLICATE, None, f"{what} was already stored")
