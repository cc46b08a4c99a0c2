"""Map each message's (patient_id, device_id) to registry keys.

Two places are asked, in this order:
1. the owned pairs: every pair of the followed patients of the partitions this member
   owns, read at each assignment (`own`) and kept as digests in sorted arrays, searched
   a batch at a time by the digests the decoder computed (devices.pairs.pair_digests).
   A stream spread over a million patients misses any cache of recent pairs, and a
   database lookup costs some 12 µs a pair (issue 22);
2. the database, in one query for a slice's remaining pairs, its answers remembered in
   a dictionary (its oldest entries evicted when full): a device enrolled after the
   assignment, a discharged patient, a patient whose records come on a partition that
   is not theirs.
A pair the registry does not know is remembered as unknown for a short while (a poison
storm of unknown devices must not become a query storm), then asked again, so a device
enrolled a minute ago is accepted. Registry pairs never change once enrolled, so no
place holds a stale one.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import asyncpg
import numpy as np
import numpy.typing as npt

from ingest.pipeline.pgcopy import copy_row, copy_rows
from ingest.platform import Clock

__all__ = ["OwnedPairs", "Registration", "RegistryCache", "Resolved"]


class Registration(NamedTuple):
    patient_key: int
    device_key: int


_UNKNOWN = Registration(-1, -1)


@dataclass(frozen=True, slots=True)
class Resolved:
    """Per message: the keys, or -1 when the device is not enrolled for that patient."""

    patient_key: npt.NDArray[np.int32]
    device_key: npt.NDArray[np.int32]

    @classmethod
    def unknown(cls, n: int) -> Resolved:
        return cls(np.full(n, -1, np.int32), np.full(n, -1, np.int32))


_Pair = tuple[str, str]
_Digests = npt.NDArray[np.uint64]  # a row per pair: its digest's two 64-bit halves


# The owned pairs of the given partitions, read by a binary COPY: each row four
# fixed-width columns (a digest as a uuid is its 16 bytes), so the rows are one array.
_OWNED_PAIRS = """
    SELECT md5(length(p.patient_id) || ':' || p.patient_id || d.device_id)::uuid,
           d.patient_key, d.device_key, (p.key_hash % $1)::smallint
    FROM patients p JOIN devices d USING (patient_key)
    WHERE p.discharged_at IS NULL AND p.key_hash % $1 = ANY($2::int[])
"""
_COPY_ROW = copy_row(
    (("digest", "V16"), ("patient_key", ">i4"), ("device_key", ">i4"), ("partition", ">i2"))
)


class OwnedPairs:
    """Pairs by digest: the first halves sorted, searched, and confirmed by the second.
    40 bytes a pair where a dictionary of strings took over 300 (three million devices)."""

    def __init__(
        self,
        digests: _Digests,
        patient_key: npt.NDArray[np.int32],
        device_key: npt.NDArray[np.int32],
        partition: npt.NDArray[np.int16],
    ) -> None:
        order = np.argsort(digests[:, 0], kind="stable")
        high = digests[order, 0]
        # Two pairs whose first halves agree (one chance in 2^64 a pair) are left to the
        # database, so a search always lands on the only candidate.
        alone = np.ones(len(high), np.bool_)
        twice = np.flatnonzero(high[1:] == high[:-1])
        alone[twice] = alone[twice + 1] = False
        order = order[alone]
        self.high = high[alone]
        self.low = digests[order, 1]
        self.patient_key = patient_key[order]
        self.device_key = device_key[order]
        self.partition = partition[order]

    @classmethod
    def empty(cls) -> OwnedPairs:
        return cls(
            np.zeros((0, 2), np.uint64),
            np.zeros(0, np.int32),
            np.zeros(0, np.int32),
            np.zeros(0, np.int16),
        )

    @classmethod
    def from_rows(cls, rows: npt.NDArray[np.void]) -> OwnedPairs:
        """The pairs of `_OWNED_PAIRS`' rows."""
        return cls(
            np.ascontiguousarray(rows["digest"]).view(np.uint64).reshape(-1, 2),
            rows["patient_key"].astype(np.int32),
            rows["device_key"].astype(np.int32),
            rows["partition"].astype(np.int16),
        )

    @classmethod
    def joined(cls, parts: Sequence[OwnedPairs]) -> OwnedPairs:
        return cls(
            np.concatenate([np.column_stack([p.high, p.low]) for p in parts]).reshape(-1, 2),
            np.concatenate([p.patient_key for p in parts]),
            np.concatenate([p.device_key for p in parts]),
            np.concatenate([p.partition for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.high)

    def on(self, partitions: Collection[int]) -> OwnedPairs:
        """The pairs of these partitions only."""
        mine = np.isin(self.partition, np.fromiter(partitions, np.int16, len(partitions)))
        return OwnedPairs(
            np.column_stack([self.high[mine], self.low[mine]]),
            self.patient_key[mine],
            self.device_key[mine],
            self.partition[mine],
        )

    def find(self, digests: _Digests) -> Resolved:
        """The keys of the pairs of these digests, -1 for those not here."""
        if not len(self):
            return Resolved.unknown(len(digests))
        order = np.argsort(digests[:, 0])  # searched in order: 2.3 times faster
        at = np.empty(len(digests), np.intp)
        at[order] = np.searchsorted(self.high, digests[order, 0])
        np.minimum(at, len(self) - 1, out=at)
        hit = (self.high[at] == digests[:, 0]) & (self.low[at] == digests[:, 1])
        return Resolved(
            np.where(hit, self.patient_key[at], -1).astype(np.int32),
            np.where(hit, self.device_key[at], -1).astype(np.int32),
        )


class RegistryCache:
    def __init__(
        self, pool: asyncpg.Pool, *, capacity: int, negative_ttl_s: float, clock: Clock
    ) -> None:
        self._pool = pool
        self._capacity = capacity
        self._negative_ttl_s = negative_ttl_s
        self._clock = clock
        self._known: dict[_Pair, Registration] = {}
        self._unknown_until: dict[_Pair, float] = {}
        self._owned = OwnedPairs.empty()
        self._owned_partitions: frozenset[int] = frozenset()
        self._partition_count = 0

    @property
    def owned(self) -> int:
        """How many pairs the owned partitions hold."""
        return len(self._owned)

    async def own(self, partitions: Collection[int], count: int) -> None:
        """Hold the pairs of the followed patients of these partitions (of `count`): the
        pairs of the partitions held already are kept, the others read in one COPY."""
        held = self._owned_partitions if count == self._partition_count else frozenset()
        kept = self._owned.on(held & set(partitions))
        new = sorted(set(partitions) - held)
        parts = [kept]
        if new:
            async with self._pool.acquire() as conn:
                rows = await copy_rows(conn, _OWNED_PAIRS, _COPY_ROW, count, new)
            parts.append(OwnedPairs.from_rows(rows))
        self._owned = OwnedPairs.joined(parts)
        self._owned_partitions = frozenset(partitions)
        self._partition_count = count

    async def resolve(
        self, patient_ids: Sequence[str], device_ids: Sequence[str], digests: _Digests
    ) -> Resolved:
        """Keys for each (patient_ids[i], device_ids[i]), whose digest is digests[i]."""
        resolved = self._owned.find(digests)
        elsewhere = np.flatnonzero(resolved.patient_key < 0).tolist()
        if not elsewhere:
            return resolved
        pairs = [(patient_ids[i], device_ids[i]) for i in elsewhere]
        found = list(map(self._known.get, pairs))
        if None in found:
            now = self._clock.monotonic()
            unknown_until = self._unknown_until
            misses = {
                pair
                for pair, hit in zip(pairs, found, strict=True)
                if hit is None and unknown_until.get(pair, 0.0) <= now
            }
            if misses:
                await self._load(misses, now)
            known = self._known
            found = [
                hit or known.get(pair, _UNKNOWN) for pair, hit in zip(pairs, found, strict=True)
            ]
        patient_keys, device_keys = zip(*found, strict=True)
        resolved.patient_key[elsewhere] = patient_keys
        resolved.device_key[elsewhere] = device_keys
        return resolved

    def forget_unknown(self, pairs: Sequence[_Pair]) -> None:
        """Ask the registry again for these pairs next time, however recently it said no:
        a replayed record comes after an enrolment this member may not have seen yet."""
        for pair in pairs:
            self._unknown_until.pop(pair, None)

    async def _load(self, pairs: set[_Pair], now: float) -> None:
        ordered = sorted(pairs)
        rows = await self._pool.fetch(
            """
            SELECT t.pid, t.did, p.patient_key, d.device_key
            FROM unnest($1::text[], $2::text[]) AS t(pid, did)
            JOIN patients p ON p.patient_id = t.pid
            JOIN devices d ON d.patient_key = p.patient_key AND d.device_id = t.did
            """,
            [p for p, _ in ordered],
            [d for _, d in ordered],
        )
        for r in rows:
            pair = (r["pid"], r["did"])
            self._known[pair] = Registration(r["patient_key"], r["device_key"])
            self._unknown_until.pop(pair, None)
            pairs.discard(pair)
        for pair in pairs:
            self._unknown_until[pair] = now + self._negative_ttl_s
        if len(self._known) > self._capacity:
            # Evict the oldest tenth (insertion order): cheaper than LRU bookkeeping per hit,
            # and a patient still sending is back with the next batch's single query.
            for pair in list(itertools.islice(self._known, self._capacity // 10 + 1)):
                del self._known[pair]
        if len(self._unknown_until) > self._capacity:
            self._unknown_until = {p: t for p, t in self._unknown_until.items() if t > now}
