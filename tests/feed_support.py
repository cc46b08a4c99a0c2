"""The clinicians' API running in the test's process, with the development issuer, two care
teams and a patient in each; alerts come from the real pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from ingest.api.auth import DevIssuer
from ingest.api.server import run_api
from ingest.api.teams import add_member, add_patients, create_team
from ingest.platform import free_port
from tests.records import message, reading
from tests.support import Stack

# Team A follows patient A, team B patient B; dr-a is in team A, dr-b in team B.
PATIENT_A, PATIENT_B = "p-team-a", "p-team-b"


@dataclass
class RunningApi:
    url: str
    issuer: DevIssuer
    audience: str

    def token(self, subject: str) -> str:
        return self.issuer.token(subject, f"Dr {subject}", self.audience)

    def client(self, subject: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token(subject)}"} if subject else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)


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


@contextlib.asynccontextmanager
async def running_api(stack: Stack, key_file: Path) -> AsyncIterator[RunningApi]:
    settings = stack.settings.model_copy(
        update={"api_port": free_port(), "dev_issuer_key_file": key_file}
    )
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_api(settings, stop, registry=CollectorRegistry(), on_ready=port.set_result)
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
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
