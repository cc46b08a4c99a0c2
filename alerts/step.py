"""The alert engine as a step of the ingest pipeline (ingest.pipeline.steps).

Loaded from PostgreSQL when partitions are assigned (those held throughout a rebalance
keep their state), forgotten when a revoked member's drain did not finish; run over
every batch before its transaction, which then applies the lifecycle (alerts.lifecycle)
and counts the aggregate scores (alerts.scores); ticked between batches: threshold
overrides changed by clinicians and discharges are applied within `OVERRIDE_POLL_S`, and
the missing-data and adherence rules are swept every `sweep_interval_seconds`, each
sweep's alerts in a transaction of its own. Before a sweep, the months 1 and 2 of
follow-up that ended a day ago are checked from PostgreSQL (alerts.adherence), a bounded
number at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence

import asyncpg

from alerts.adherence import check_months, store_checks
from alerts.awaited import AwaitedData
from alerts.catalogue import RESOLVED_BY_DATA
from alerts.engine import Candidate, Engine
from alerts.lifecycle import Applied, Arrivals, apply_alerts
from alerts.loader import load_partitions, load_patients
from alerts.metrics import AlertMetrics
from alerts.scores import ScoreKey, to_count
from ingest.pipeline import ReadingRows, Written
from ingest.platform import Clock, Connection

__all__ = ["OVERRIDE_POLL_S", "AlertStep", "AlertWork"]

log = logging.getLogger(__name__)

OVERRIDE_POLL_S = 5.0
# A month of follow-up is checked a day after it ends (data sent late still counts) [U],
# if it ended within the last week (older months were checked by whoever had them then).
MONTH_CHECK_AFTER_US = 24 * 3_600_000_000
MONTH_CHECK_WITHIN_US = 7 * 24 * 3_600_000_000
MONTH_CHECKS_PER_SWEEP = 2_000


class AlertWork:
    """What one transaction does to alerts: the lifecycle of a batch's (or a sweep's)
    candidates, the missing-data alerts its arrivals resolve, its scores counted."""

    def __init__(
        self,
        step: AlertStep,
        candidates: Sequence[Candidate],
        arrivals: Arrivals,
        scores: Mapping[ScoreKey, int],
    ) -> None:
        self._step = step
        self.candidates = candidates
        self.arrivals = arrivals
        self.scores = scores
        self.applied = Applied()

    async def apply(self, conn: Connection, written: Written) -> None:
        step = self._step
        self.applied = await apply_alerts(
            conn,
            self.candidates,
            self.arrivals,
            cooldown_us=step.engine.config.cooldown_us,
            now_us=step.clock.now_ms() * 1000,
            scores=to_count(self.scores, {p for p, n in written.stored.items() if n}),
        )

    def committed(self) -> None:
        self._step.metrics.observe(self.applied)


class AlertStep:
    name = "alerts"

    def __init__(
        self, engine: Engine, pool: asyncpg.Pool, clock: Clock, metrics: AlertMetrics
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.metrics = metrics
        self._pool = pool
        self._partitions = 1
        self._last_sweep = 0.0
        self._last_override_poll = 0.0
        self._override_seen = 0  # id in threshold_override_history
        self._discharge_seen = 0  # id in discharges
        self._awaited = AwaitedData()
        self._owned: set[int] = set()  # the partitions whose patients the engine holds
        self._loaded = False  # no sweep of a half-rebuilt state: it would miss their data

    async def assigned(
        self, partitions: Sequence[int], partition_count: int, continuous: Collection[int]
    ) -> None:
        """Load the patients of the partitions this member did not hold, keeping the state
        of those it held throughout (a takeover moves only the partitions it moves). A
        member that lost partitions (their patients cannot be taken out of the state),
        held one that another member wrote to meanwhile, or sees partitions renumbered,
        rebuilds all of it."""
        started = self.clock.monotonic()
        self._loaded = False
        kept, self._owned = self._owned, set()  # until this load completes (or is retried)
        if (
            not kept
            or not kept <= set(continuous) & set(partitions)
            or partition_count != self._partitions
        ):
            self._forget()  # also what a load cancelled or failed half-way left
            kept = set()
        new = sorted(set(partitions) - kept)
        self._partitions = partition_count
        async with self._pool.acquire() as conn:
            if not kept:  # from here on, the changes since the state was read
                self._override_seen = await conn.fetchval(
                    "SELECT coalesce(max(id), 0) FROM threshold_override_history"
                )
                self._discharge_seen = await conn.fetchval(
                    "SELECT coalesce(max(id), 0) FROM discharges"
                )
            loaded = (
                await load_partitions(
                    conn, self.engine, new, partition_count, self.clock.now_ms() * 1000
                )
                if new
                else 0
            )
            await self._load_awaited(conn)
        self._owned = set(partitions)
        self._loaded = True
        self.metrics.patients.set(len(self.engine.history))
        self.metrics.rebuild_seconds.set(self.clock.monotonic() - started)
        log.info(
            "alert state of %d patients (partitions %s) loaded in %.1f s, %d kept",
            loaded,
            new,
            self.clock.monotonic() - started,
            len(self.engine.history) - loaded,
        )

    async def _load_awaited(self, conn: Connection) -> None:
        """The unresolved missing-data findings of the patients followed here."""
        self._awaited.clear()
        for r in await conn.fetch(
            """
            SELECT patient_key, rule_id,
                   coalesce((explanation -> 'values' ->> 'data_since_s')::float8 * 1e6, 0)::bigint
                       AS since_us
            FROM findings WHERE status = 'open' AND rule_id = ANY($1::text[])
            """,
            list(RESOLVED_BY_DATA),
        ):
            if self.engine.history.slot(r["patient_key"]) is not None:
                self._awaited.expect(r["patient_key"], r["rule_id"], r["since_us"])

    def revoked(self, drained: bool) -> None:
        self._loaded = False
        if not drained:  # a batch evaluated against this state may never commit
            self._forget()

    def _forget(self) -> None:
        self.engine.reset()
        self._owned = set()
        self._awaited.clear()
        self.metrics.patients.set(0)

    async def prepare(self, rows: ReadingRows) -> AlertWork:
        if not len(rows):
            return AlertWork(self, [], Arrivals.none(), {})
        unknown = self.engine.unknown(rows.patient_key)
        if unknown:  # enrolled after the assignment (or mapped elsewhere by the gateway)
            async with self._pool.acquire() as conn:
                await load_patients(
                    conn, self.engine, unknown, self._partitions, self.clock.now_ms() * 1000
                )
        started = time.perf_counter()
        # In a thread: numpy releases the GIL in its loops, so the event loop (the writer's
        # COPY, the intake) goes on meanwhile. Nothing else touches the engine until this
        # returns: the prepare stage awaits it, and rebalances drain that stage first.
        candidates, scores = await asyncio.to_thread(self._evaluate, rows)
        self.metrics.evaluation_seconds.observe(time.perf_counter() - started)
        arrivals = self._awaited.arrivals(rows.patient_key, rows.kind, rows.measured_at_us)
        return AlertWork(self, candidates, arrivals, scores)

    def _evaluate(self, rows: ReadingRows) -> tuple[list[Candidate], Counter[ScoreKey]]:
        candidates = self.engine.evaluate(
            rows.patient_key,
            rows.kind,
            rows.value,
            rows.measured_at_us,
            rows.reference_us,
            rows.device_key,
        )
        return candidates, self.engine.take_scores()

    async def tick(self, now_us: Callable[[], Mapping[int, int]]) -> AlertWork | None:
        """New threshold overrides, then the sweep when it is due."""
        if not self._loaded:
            return None
        if self.clock.monotonic() - self._last_override_poll >= OVERRIDE_POLL_S:
            await self._refresh_overrides()
            await self._refresh_discharges()
            self._last_override_poll = self.clock.monotonic()
        if self.clock.monotonic() - self._last_sweep < self.engine.config.sweep_interval_s:
            return None
        self._last_sweep = self.clock.monotonic()
        now_by_partition = now_us()
        await self._check_months(now_by_partition)
        started = time.perf_counter()
        candidates = self.engine.sweep(now_by_partition)
        self._awaited.expect_candidates(candidates)
        self.metrics.sweep_seconds.observe(time.perf_counter() - started)
        return AlertWork(self, candidates, Arrivals.none(), {}) if candidates else None

    async def _check_months(self, now_by_partition: Mapping[int, int]) -> None:
        due = self.engine.months_to_check(
            now_by_partition, MONTH_CHECK_AFTER_US, MONTH_CHECK_WITHIN_US
        )[:MONTH_CHECKS_PER_SWEEP]
        if not due:
            return
        async with self._pool.acquire() as conn:
            checks = await check_months(conn, self.engine.config, due, self.clock.now_ms() * 1000)
            await store_checks(conn, checks)
        for c in checks:
            measure, expected, received = c.worst or ("", 0, 0)
            self.engine.month_checked(c.patient_key, c.month, measure, expected, received)

    async def _refresh_discharges(self) -> None:
        """Stop following the patients discharged since the last look."""
        async with self._pool.acquire() as conn:
            discharged = await conn.fetch(
                "SELECT id, patient_key FROM discharges WHERE id > $1", self._discharge_seen
            )
        if discharged:
            self._discharge_seen = max(r["id"] for r in discharged)
            self.engine.set_discharged(r["patient_key"] for r in discharged)

    async def _refresh_overrides(self) -> None:
        """Apply the overrides changed since the last look to the patients followed here."""
        async with self._pool.acquire() as conn:
            changes = await conn.fetch(
                "SELECT id, patient_key FROM threshold_override_history WHERE id > $1",
                self._override_seen,
            )
            if not changes:
                return
            history = self.engine.history
            keys = [k for k in {r["patient_key"] for r in changes} if history.slot(k) is not None]
            current = await conn.fetch(
                "SELECT patient_key, parameter, value FROM threshold_overrides "
                "WHERE patient_key = ANY($1::int[])",
                keys,
            )
        self._override_seen = max(r["id"] for r in changes)
        overrides: dict[int, dict[str, float]] = {key: {} for key in keys}
        for r in current:
            overrides[r["patient_key"]][r["parameter"]] = r["value"]
        for key, values in overrides.items():
            self.engine.override(key, values)
