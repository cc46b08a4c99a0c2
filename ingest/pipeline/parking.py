"""The parking leader: parked dead letters replayed when their device is enrolled.

A gateway often sends before the patient's enrolment reaches telemon; those
records are dead-lettered `unknown_device` and parked (ingest.pipeline.
replay_marks) for `dead_letter_park_window_s`. One leader per database (an
advisory lock, as the outbox relays) looks when an enrolment is notified (a
trigger on `devices`, whatever the enrolment path) and every
`dead_letter_park_poll_s` anyway: the parked dead letters whose (patient, device)
is now enrolled are replayed through Kafka (ingest.pipeline.replay_requests), as
`telemon:parking`; those whose window has passed expire and stay dead letters.

A replay sent is remembered until its dead letter is marked or no longer parked,
so a slow consumer does not get it twice from this leader; a new leader (after a
crash) may send again what was in flight, which the readings' unique key makes a
duplicate, and the dead letter keeps its first outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ingest.pipeline.dead_letter_search import COLUMNS, DeadLetter, dead_letter
from ingest.pipeline.metrics import IngestMetrics
from ingest.pipeline.replay_requests import audit_replays, send_replays
from ingest.platform import Clock, Connection, advisory_lock_key

__all__ = ["AGENT", "ENROLMENT_CHANNEL", "ParkingLeader"]

log = logging.getLogger(__name__)

AGENT = "telemon:parking"
ENROLMENT_CHANNEL = "telemon_enrolment"


class ParkingLeader:
    def __init__(
        self,
        *,
        dsn: str,
        schema: str,
        topic: str,
        producer: AIOKafkaProducer,
        clock: Clock,
        metrics: IngestMetrics,
        poll_s: float,
        chunk: int = 500,
        retry_s: float = 2.0,
    ) -> None:
        self._dsn = dsn
        self._schema = schema
        self._topic = topic
        self._producer = producer
        self._clock = clock
        self._metrics = metrics
        self._poll_s = poll_s
        self._chunk = chunk
        self._retry_s = retry_s
        self._wake = asyncio.Event()
        self._in_flight: set[int] = set()
        self.is_leader = False

    async def run(self) -> None:
        """Lead (or wait to) forever; survives database and broker outages."""
        lock_key = advisory_lock_key(f"telemon-parking:{self._schema}")
        while True:
            try:
                await self._run_once(lock_key)
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError) as error:
                log.warning("parking leader: %s; retrying in %.0f s", error, self._retry_s)
            self.is_leader = False
            await asyncio.sleep(self._retry_s)

    async def _run_once(self, lock_key: int) -> None:
        conn = await asyncpg.connect(self._dsn, server_settings={"search_path": self._schema})
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key):  # noqa: ASYNC110
                await asyncio.sleep(self._retry_s)
            self.is_leader = True
            self._in_flight.clear()  # a new leader knows nothing of an earlier one's sends
            await conn.add_listener(ENROLMENT_CHANNEL, self._notified)
            while True:
                self._wake.clear()
                await self.look(conn)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=2))

    def _notified(self, _conn: object, _pid: object, _channel: object, payload: object) -> None:
        if payload == self._schema:
            self._wake.set()

    async def look(self, conn: Connection) -> int:
        """Expire what is past its window, replay what is now enrolled; the dead letters
        sent for replay."""
        now_us = self._clock.now_ms() * 1000
        expired = await conn.execute(
            """
            UPDATE dead_letters SET park_expired_at = to_timestamp($1 / 1e6)
            WHERE parked_until IS NOT NULL AND park_expired_at IS NULL AND replayed_at IS NULL
              AND parked_until <= to_timestamp($1 / 1e6)
            """,
            now_us,
        )
        self._metrics.dead_letters_expired.inc(int(expired.split()[-1]))
        await self._forget_settled(conn)
        sent = 0
        while True:
            letters = await self._enrolled(conn, now_us)
            if not letters:
                break
            await send_replays(self._producer, self._topic, letters, AGENT, self._clock.now_ms())
            self._in_flight.update(d.id for d in letters)
            await audit_replays(conn, letters, AGENT, "telemon-ingest")
            sent += len(letters)
            log.info("parking: %d dead letters replayed, their device now enrolled", len(letters))
            if len(letters) < self._chunk:
                break
        self._metrics.dead_letters_waiting.set(
            await conn.fetchval(
                "SELECT count(*) FROM dead_letters WHERE parked_until IS NOT NULL "
                "AND park_expired_at IS NULL AND replayed_at IS NULL"
            )
        )
        return sent

    async def _enrolled(self, conn: Connection, now_us: int) -> list[DeadLetter]:
        rows = await conn.fetch(
            f"""
            SELECT {COLUMNS} FROM dead_letters d
            JOIN patients p ON p.patient_id = d.patient_id
            JOIN devices v ON v.patient_key = p.patient_key AND v.device_id = d.device_id
            WHERE d.parked_until IS NOT NULL AND d.park_expired_at IS NULL
              AND d.replayed_at IS NULL AND d.parked_until > to_timestamp($1 / 1e6)
              AND NOT (d.id = ANY($2::bigint[]))
            ORDER BY d.id LIMIT $3
            """,
            now_us,
            list(self._in_flight),
            self._chunk,
        )
        return [dead_letter(r) for r in rows]

    async def _forget_settled(self, conn: Connection) -> None:
        """Sent replays whose dead letter is marked (or expired) are no longer in flight."""
        if not self._in_flight:
            return
        waiting = await conn.fetch(
            "SELECT id FROM dead_letters WHERE id = ANY($1::bigint[]) AND replayed_at IS NULL "
            "AND park_expired_at IS NULL",
            list(self._in_flight),
        )
        self._in_flight = {r["id"] for r in waiting}
