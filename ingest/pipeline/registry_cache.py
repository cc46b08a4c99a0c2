"""Map each message's (patient_id, device_id) to registry keys.

Hot path: a dictionary (its oldest entries evicted when full). Misses of a
slice are looked up in one query. A pair the registry does not know is
remembered as unknown for a short while (a poison storm of unknown devices must
not become a query storm), then asked again, so a device enrolled a minute ago
is accepted.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import asyncpg
import numpy as np
import numpy.typing as npt

from ingest.platform import Clock

__all__ = ["Registration", "RegistryCache", "Resolved"]


class Registration(NamedTuple):
    patient_key: int
    device_key: int


_UNKNOWN = Registration(-1, -1)


@dataclass(frozen=True, slots=True)
class Resolved:
    """Per message: the keys, or -1 when the device is not enrolled for that patient."""

    patient_key: npt.NDArray[np.int32]
    device_key: npt.NDArray[np.int32]


_Pair = tuple[str, str]


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

    async def resolve(self, patient_ids: Sequence[str], device_ids: Sequence[str]) -> Resolved:
        """Keys for each (patient_ids[i], device_ids[i])."""
        pairs = list(zip(patient_ids, device_ids, strict=True))
        found = list(map(self._known.get, pairs))  # the hot path: one C-level pass
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
        if not found:
            return Resolved(np.empty(0, np.int32), np.empty(0, np.int32))
        patient_keys, device_keys = zip(*found, strict=True)
        return Resolved(np.array(patient_keys, np.int32), np.array(device_keys, np.int32))

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
