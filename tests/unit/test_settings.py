"""Settings refuse unsafe or inconsistent combinations at construction."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ingest.platform import Settings


@pytest.mark.parametrize(
    "bad",
    [
        {"database_schema": "Robert'); DROP TABLE"},
        {"dlq_topic": "telemon.readings.v1"},
        {"alerts_topic": "telemon.readings.v1.dlq"},
        {"kafka_security_protocol": "SASL_SSL"},
        {"kafka_ssl_certfile": "client-cert.pem"},
        {"reject_ratio_limit": 0},
        {"batch_max_messages": 0},
        {"enable_auto_commit": True},
        {"api_trusted_proxies": "127.0.0.1,*"},
        {"api_trusted_proxies": "proxy.example"},
        {"api_public_url": "javascript:alert(1)"},
        {"api_max_token_lifetime_s": 10 * 365 * 86400},
    ],
)
def test_unsafe_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMON_READINGS_TOPIC", "gw.readings")
    monkeypatch.setenv("TELEMON_KAFKA_IDEMPOTENT_PRODUCER", "false")
    settings = Settings()
    assert settings.readings_topic == "gw.readings"
    assert settings.dead_letter_topic == "gw.readings.dlq"
    assert settings.kafka_idempotent_producer is False


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.batch_max_messages = 1  # type: ignore[misc]


def test_the_api_believes_no_proxy_and_builds_links_from_its_own_address() -> None:
    settings = Settings(api_host="127.0.0.1", api_port=8080)
    assert settings.trusted_proxies == []
    assert settings.api_base_url == "http://127.0.0.1:8080"
    behind = Settings(
        api_trusted_proxies="10.1.2.3, 192.0.2.0/24", api_public_url="https://telemon.example/"
    )
    assert behind.trusted_proxies == ["10.1.2.3", "192.0.2.0/24"]
    assert behind.api_base_url == "https://telemon.example"
