"""aiokafka clients configured from Settings (security included), and topic creation."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from ingest.platform.settings import Settings

__all__ = [
    "client_options",
    "ensure_topics",
    "make_consumer",
    "make_producer",
    "make_tail_reader",
]

log = logging.getLogger(__name__)


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection and security options shared by every client."""
    assert settings.kafka_bootstrap, "the embedded broker must be started before clients"
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
        "client_id": "telemon",
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    if settings.kafka_sasl_mechanism:
        assert settings.kafka_sasl_password is not None  # checked by Settings
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def make_consumer(settings: Settings, *, max_poll_records: int | None = None) -> AIOKafkaConsumer:
    """A group member that never commits on its own."""
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=max_poll_records or settings.batch_max_messages,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_session_timeout_ms // 5,
    )


def make_tail_reader(settings: Settings) -> AIOKafkaConsumer:
    """A consumer outside any group, for reading the last records of a partition."""
    return AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotent_producer,
        "linger_ms": 5,
    }
    options.update(overrides)
    return AIOKafkaProducer(**client_options(settings), **options)


async def ensure_topics(settings: Settings) -> None:
    """Create the readings, dead-letter and alerts topics if they are missing."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.readings_topic, settings.dead_letter_topic, settings.alerts_topic]
        missing = [
            NewTopic(name, settings.topic_partitions, 1) for name in wanted if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another member was quicker
                await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
    finally:
        await admin.close()
