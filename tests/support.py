"""What integration tests share: a per-test stack on the real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from devices.registry import DeviceType, Enrollment, Programme, enroll
from ingest.pipeline.stages import Totals
from ingest.platform import (
    Connection,
    Settings,
    client_options,
    create_pool,
    die_with_parent,
    free_port,
    make_producer,
)
from ingest.service import run_ingest


async def eventually(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@dataclass
class RunningIngest:
    registry: CollectorRegistry
    stop: asyncio.Event
    task: asyncio.Task[Totals]
    port: int

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@dataclass
class Stack:
    """One test's schema and topics on the session's PostgreSQL and broker."""

    settings: Settings
    _pool: asyncpg.Pool | None = field(default=None, repr=False)

    async def db(self) -> asyncpg.Pool:
        """The test's own pool on its schema (never through a test's proxy)."""
        if self._pool is None:
            assert self.settings.database_url is not None
            self._pool = await create_pool(
                self.settings.database_url, self.settings.database_schema, 4
            )
        return self._pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with (await self.db()).acquire() as conn:
            yield conn

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def enroll(
        self, pairs: Iterable[tuple[str, str]], programme: Programme = Programme.COVID
    ) -> None:
        rows = [
            Enrollment(
                patient_id=p,
                programme=programme,
                device_id=d,
                device_type=DeviceType.PULSE_OXIMETER,
            )
            for p, d in pairs
        ]
        async with self.connection() as conn:
            await enroll(conn, rows)

    async def produce(
        self,
        messages: Iterable[tuple[bytes | None, bytes]],
        topic: str | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> list[Any]:
        """Send and wait for every acknowledgement; returns the record metadata."""
        producer = make_producer(self.settings, linger_ms=2)
        await producer.start()
        try:
            futures = [
                await producer.send(
                    topic or self.settings.readings_topic,
                    key=k,
                    value=v,
                    timestamp_ms=timestamp_ms,
                    headers=headers,
                )
                for k, v in messages
            ]
            return list(await asyncio.gather(*futures))
        finally:
            await producer.stop()

    @contextlib.asynccontextmanager
    async def ingest(self, **overrides: Any) -> AsyncIterator[RunningIngest]:
        """telemon ingest in this process, stopped (drained) on exit."""
        settings = self.settings.model_copy(update=overrides)
        registry = CollectorRegistry()
        stop = asyncio.Event()
        port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            run_ingest(settings, stop, registry=registry, on_ready=port.set_result)
        )
        await asyncio.wait([task, port], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
        if task.done():
            task.result()
        running = RunningIngest(registry, stop, task, port.result())
        try:
            yield running
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), 40)

    async def end_offsets(self, topic: str | None = None) -> dict[int, int]:
        consumer = AIOKafkaConsumer(**client_options(self.settings))
        await consumer.start()
        try:
            topic = topic or self.settings.readings_topic
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
            ends = await consumer.end_offsets(tps)
            return {tp.partition: offset for tp, offset in ends.items()}
        finally:
            await consumer.stop()

    async def stored_offsets(self) -> dict[int, int]:
        rows = await (await self.db()).fetch(
            "SELECT partition, next_offset FROM ingest_offsets WHERE consumer_group = $1 "
            "AND topic = $2",
            self.settings.consumer_group,
            self.settings.readings_topic,
        )
        return {r["partition"]: r["next_offset"] for r in rows}

    async def wait_drained(self, timeout_s: float = 60.0) -> None:
        """Every record on the readings topic is durable (stored offsets reach the end)."""
        ends = {p: o for p, o in (await self.end_offsets()).items() if o > 0}

        async def drained() -> bool:
            stored = await self.stored_offsets()
            return all(stored.get(p, 0) >= o for p, o in ends.items())

        await eventually(drained, timeout_s, f"offsets {ends} to be stored")

    async def read_topic(self, topic: str, timeout_s: float = 20.0) -> list[Any]:
        """Every record of `topic` up to its current end."""
        consumer = AIOKafkaConsumer(
            **client_options(self.settings), enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            records: list[Any] = []
            deadline = time.monotonic() + timeout_s
            while any([await consumer.position(tp) < ends[tp] for tp in tps]):
                if time.monotonic() > deadline:
                    raise AssertionError(f"could not read {topic} to its end")
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
            return records
        finally:
            await consumer.stop()

    def environment(self, **overrides: Any) -> dict[str, str]:
        """TELEMON_* variables that reproduce these settings in another process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMON_")}
        values = self.settings.model_dump(exclude_none=True) | overrides
        for name, value in values.items():
            text = json.dumps(value) if isinstance(value, bool) else str(value)
            env[f"TELEMON_{name.upper()}"] = text
        return env


async def run_cli_refused(stack: Stack, *args: str) -> tuple[int, str]:
    """`telemon <args>`, expected to refuse: its exit code and output, which must hold no
    traceback."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "ingest.cli", *args),
        env=stack.environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await process.communicate())[0].decode()
    assert "Traceback" not in output, output
    assert process.returncode is not None
    return process.returncode, output


async def run_cli(stack: Stack, *args: str) -> str:
    """`telemon <args>` in a child process on the stack's settings; its output (exit 0)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingest.cli",
        *args,
        env=stack.environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()


class IngestProcess:
    """`telemon ingest` as a child process, for kill -9 and SIGTERM tests."""

    def __init__(
        self, stack: Stack, log_path: Path, failpoints: str = "", **overrides: Any
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = stack.environment(http_port=self.port, **overrides)
        env["TELEMON_FAILPOINTS"] = failpoints  # ingest.platform.failpoints
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ingest.cli", "ingest"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # A test that fails or hangs must not leave a member running after it.
            preexec_fn=lambda: die_with_parent(signal.SIGKILL),
        )

    async def wait_ready(self, timeout_s: float = 60) -> None:
        import urllib.error
        import urllib.request

        def ready() -> bool:
            url = f"http://127.0.0.1:{self.port}/readyz"
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    return bool(r.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        async def check() -> bool:
            return await asyncio.to_thread(ready)

        await eventually(check, timeout_s, "the ingest process to be ready")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.wait(10)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        finally:
            self._log.close()

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def metric(self, name: str) -> float:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return 0.0


def synthetic_load(
    messages: int,
    patients: int,
    readings_per_message: int = 1,
    start_ms: int | None = None,
    prefix: str = "p",
) -> tuple[list[tuple[str, str]], list[tuple[bytes, bytes]]]:
    """Enrollment pairs and messages whose readings are all distinct and valid."""
    start_ms = start_ms or int(time.time() * 1000) - 3_600_000
    pairs = [(f"{prefix}-{i}", f"oxi-{prefix}-{i}") for i in range(patients)]
    out = []
    for n in range(messages):
        patient, device = pairs[n % patients]
        base = start_ms + (n // patients) * readings_per_message * 1000
        readings = [
            {
                "kind": "spo2",
                "value": 90 + (n + r) % 10,
                "unit": "%",
                "measured_at": _iso_ms(base + r * 1000),
            }
            for r in range(readings_per_message)
        ]
        body = {
            "device_id": device,
            "patient_id": patient,
            "message_id": f"{device}/{n}",
            "readings": readings,
        }
        out.append((patient.encode(), json.dumps(body).encode()))
    return pairs, out


def _iso_ms(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class TcpProxy:
    """A loopback TCP proxy in front of PostgreSQL that a test can cut and restore."""

    def __init__(self, upstream_dsn: str) -> None:
        from urllib.parse import parse_qs, urlparse

        url = urlparse(upstream_dsn)
        query = parse_qs(url.query)
        self._unix = f"{query['host'][0]}/.s.PGSQL.{url.port or 5432}" if "host" in query else None
        self._tcp = (url.hostname or "127.0.0.1", url.port or 5432)
        self._user = url.username or "postgres"
        self._database = url.path.lstrip("/") or "postgres"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def dsn(self) -> str:
        return f"postgresql://{self._user}@127.0.0.1:{self.port}/{self._database}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self._unix:
                up_reader, up_writer = await asyncio.open_unix_connection(self._unix)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self._tcp)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.transport.abort()


async def ledger_is_contiguous(stack: Stack) -> None:
    """Each partition's batches (of the stack's group) cover its offsets once: no gap, no
    overlap."""
    rows = await (await stack.db()).fetch(
        "SELECT partition, first_offset, next_offset FROM ingest_ledger "
        "WHERE consumer_group = $1 ORDER BY partition, first_offset",
        stack.settings.consumer_group,
    )
    previous: dict[int, int] = {}
    for r in rows:
        p = r["partition"]
        assert r["first_offset"] == previous.get(p, 0), f"partition {p}: gap or overlap at {r}"
        previous[p] = r["next_offset"]
