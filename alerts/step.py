"""The alert engine as a step of the ingest pipeline.

Rebuilt from PostgreSQL when partitions are assigned, reset when they are
revoked; run over every batch (before its transaction, which then applies the
lifecycle); swept periodically for missing data and adherence.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np

from alerts.engine import Candidate, Engine
from alerts.lifecycle import Arrivals
from alerts.loader import load_partitions, load_patients
from ingest.batch import ReadingRows
from ingest.clock import Clock
from ingest.metrics import IngestMetrics

__all__ = ["AlertStep", "AlertWork"]


@dataclass(frozen=True, slots=True)
class AlertWork:
    """What a batch transaction does to alerts."""

    candidates: Sequence[Candidate]
    arrivals: Arrivals


class AlertStep:
    def __init__(
        self, engine: Engine, pool: asyncpg.Pool, clock: Clock, metrics: IngestMetrics
    ) -> None:
        self.engine = engine
        self._pool = pool
        self._clock = clock
        self._metrics = metrics
        self._partitions = 1
        self._last_sweep = 0.0

    async def assigned(self, partitions: Sequence[int], partition_count: int) -> None:
        self.engine.reset()
        self._partitions = partition_count
        async with self._pool.acquire() as conn:
            loaded = await load_partitions(
                conn, self.engine, partitions, partition_count, self._clock.now_ms() * 1000
            )
        self._metrics.alert_patients.set(loaded)

    def revoked(self) -> None:
        self.engine.reset()
        self._metrics.alert_patients.set(0)

    async def evaluate(self, rows: ReadingRows) -> AlertWork:
        if not len(rows):
            return AlertWork([], Arrivals.none())
        unknown = self.engine.knows(rows.patient_key.tolist())
        if unknown:  # enrolled after the assignment (or mapped elsewhere by the gateway)
            async with self._pool.acquire() as conn:
                await load_patients(
                    conn, self.engine, unknown, self._partitions, self._clock.now_ms() * 1000
                )
        started = time.perf_counter()
        candidates = self.engine.evaluate(
            rows.patient_key,
            rows.kind,
            rows.value,
            rows.measured_at_us,
            rows.reference_us,
            rows.device_key,
        )
        self._metrics.alert_evaluation_seconds.observe(time.perf_counter() - started)
        return AlertWork(candidates, _arrivals(rows))

    def sweep_due(self) -> bool:
        return self._clock.monotonic() - self._last_sweep >= self.engine.config.sweep_interval_s

    def sweep(self, now_by_partition: Mapping[int, int]) -> AlertWork:
        self._last_sweep = self._clock.monotonic()
        started = time.perf_counter()
        candidates = self.engine.sweep(now_by_partition)
        self._metrics.alert_sweep_seconds.observe(time.perf_counter() - started)
        return AlertWork(candidates, Arrivals.none())


def _arrivals(rows: ReadingRows) -> Arrivals:
    """The latest measured_at per (patient, kind) of the batch."""
    pairs = np.stack([rows.patient_key.astype(np.int64), rows.kind.astype(np.int64)])
    unique, inverse = np.unique(pairs, axis=1, return_inverse=True)
    latest = np.full(unique.shape[1], np.iinfo(np.int64).min)
    np.maximum.at(latest, inverse.ravel(), rows.measured_at_us)
    return Arrivals(unique[0].tolist(), unique[1].tolist(), latest.tolist())
