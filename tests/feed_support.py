"""The clinicians' API running in the test's process, with the development issuer, two care
teams and a patient in each; episodes come from the real pipeline, or are written as it
would write them (`an_episode`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from alerts.lifecycle import record_events
from ingest.api.auth import DevIssuer
from ingest.api.server import run_api
from ingest.api.teams import add_member, add_patients, create_team
from ingest.platform import Clock, free_port
from tests.records import message, reading
from tests.support import Stack

# Team A follows patient A, team B patient B; dr-a is in team A, dr-b in team B.
PATIENT_A, PATIENT_B = "p-team-a", "p-team-b"


@dataclass
class RunningApi:
    url: str
    issuer: DevIssuer
    audience: str
    metrics_url: str  # the API's metrics port

    def token(self, subject: str, lifetime_s: int = 3600) -> str:
        return self.issuer.token(subject, f"Dr {subject}", self.audience, lifetime_s=lifetime_s)

    def client(self, subject: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token(subject)}"} if subject else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)

    async def metrics(self) -> str:
        async with httpx.AsyncClient(timeout=10) as client:
            return (await client.get(f"{self.metrics_url}/metrics")).text


class ManualClock:
    """A clock the test moves (the API reads token expiry and rate limits from it)."""

    def __init__(self) -> None:
        self.seconds = time.time()
        self.monotonic_s = 1000.0

    def now_ms(self) -> int:
        return int(self.seconds * 1000)

    def monotonic(self) -> float:
        return self.monotonic_s

    def advance(self, seconds: float) -> None:
        self.seconds += seconds
        self.monotonic_s += seconds


def heart_rate(patient: str, value: float, minutes_ago: float = 1.0) -> tuple[bytes, bytes]:
    at = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()
    body = message(
        reading("heart_rate", value, "/min", at), patient=patient, device=f"oxi-{patient}"
    )
    return patient.encode(), json.dumps(body).encode()


async def two_teams(stack: Stack) -> None:
    await stack.enroll([(PATIENT_A, f"oxi-{PATIENT_A}"), (PATIENT_B, f"oxi-{PATIENT_B}")])
    async with stack.connection() as conn:
        for team, patient in (("team-a", PATIENT_A), ("team-b", PATIENT_B)):
            await create_team(conn, team, team.upper())
            await add_member(conn, team, team.replace("team", "dr"))
            await add_patients(conn, team, [patient])


async def an_episode(stack: Stack, patient: str, rule: str = "heart_rate") -> int:
    """An open red clinical episode of `patient` holding one finding of `rule`, and its
    `raised` event, written as the pipeline would (alerts.lifecycle; no ingest needed)."""
    async with stack.connection() as conn, conn.transaction():
        patient_key: int = await conn.fetchval(
            "SELECT patient_key FROM patients WHERE patient_id = $1", patient
        )
        episode_id: int = await conn.fetchval(
            """
            INSERT INTO episodes (patient_key, job, severity, severity_since, status,
                                  first_fired_at, last_fired_at, opened_at)
            VALUES ($1, 'clinical', 3, now(), 'open', now(), now(), now())
            RETURNING episode_id
            """,
            patient_key,
        )
        await conn.execute(
            """
            INSERT INTO findings (episode_id, patient_key, rule_id, rule_version, severity,
                                  status, first_fired_at, last_fired_at, raised_at, explanation)
            VALUES ($1, $2, $3, 1, 3, 'open', now(), now(), now(), $4::jsonb)
            """,
            episode_id,
            patient_key,
            rule,
            json.dumps({"rule": rule, "values": {}}),
        )
        await record_events(
            conn, [(episode_id, patient_key, "raised", 3, "open", {"rules": [rule]})], None
        )
    return episode_id


@contextlib.asynccontextmanager
async def running_api(
    stack: Stack, key_file: Path, *, clock: Clock | None = None, **overrides: object
) -> AsyncIterator[RunningApi]:
    settings = stack.settings.model_copy(
        update={
            "api_port": free_port(),
            "api_metrics_port": 0,
            "dev_issuer_key_file": key_file,
            **overrides,
        }
    )
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    metrics_port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_api(
            settings,
            stop,
            registry=CollectorRegistry(),
            clock=clock,
            on_ready=port.set_result,
            on_metrics_ready=metrics_port.set_result,
        )
    )
    await asyncio.wait([task, port], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
    if task.done():
        task.result()
    assert settings.token_issuer is not None
    try:
        yield RunningApi(
            f"http://127.0.0.1:{port.result()}",
            DevIssuer(settings.token_issuer, key_file),
            settings.oidc_audience,
            f"http://127.0.0.1:{metrics_port.result()}",
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
