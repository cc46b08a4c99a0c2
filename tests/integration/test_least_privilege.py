"""The services run with logins that own nothing (issue 20): `telemon migrate` is the only
command that changes the schema, as the tables' owner; `telemon api` and `telemon ingest`
(with its outbox relays) start, each as a real process, with a login that is only a member
of its role, and do their work. What such a login cannot do; what the API says, in one
line, when the schema is not migrated or the database cannot be reached."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from ingest.api.auth import DevIssuer
from ingest.api.server import API_ROLE
from ingest.platform import free_port, migrate
from ingest.service import INGEST_ROLE
from tests.feed_support import PATIENT_A, heart_rate, two_teams
from tests.support import IngestProcess, Stack, eventually


def login_dsn(owner_dsn: str, login: str, password: str) -> str:
    url = urlsplit(owner_dsn)
    host = url.netloc.rpartition("@")[2]
    return urlunsplit(url._replace(netloc=f"{login}:{password}@{host}"))


@contextlib.asynccontextmanager
async def logins(stack: Stack) -> AsyncIterator[dict[str, str]]:
    """A login for the API and one for ingest, each only a member of its role."""
    password = uuid.uuid4().hex
    names = {role: f"{stack.settings.database_schema}_{role}" for role in (API_ROLE, INGEST_ROLE)}
    async with stack.connection() as conn:
        for role, login in names.items():
            await conn.execute(f"CREATE ROLE {login} LOGIN PASSWORD '{password}' IN ROLE {role}")
    assert stack.settings.database_url is not None
    try:
        yield {
            role: login_dsn(stack.settings.database_url, login, password)
            for role, login in names.items()
        }
    finally:
        async with stack.connection() as conn:
            for login in names.values():
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                    login,
                )
                await conn.execute(f"DROP ROLE IF EXISTS {login}")


@contextlib.contextmanager
def api_process(stack: Stack, log: Path, **overrides: object) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = stack.environment(
        api_port=port, api_metrics_port=free_port(), dev_issuer_key_file=log.parent / "dev.pem"
    )
    env.update({f"TELEMON_{k.upper()}": str(v) for k, v in overrides.items()})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ingest.cli", "api"], env=env, stdout=out, stderr=out
        )
        try:
            yield f"http://127.0.0.1:{port}", process.pid
        finally:
            process.terminate()
            process.wait(20)


async def test_api_and_ingest_run_with_logins_that_own_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    await two_teams(stack)
    schema = stack.settings.database_schema
    async with logins(stack) as dsn:
        # What a service's login cannot do, whatever role it sets or resets.
        conn = await asyncpg.connect(dsn[API_ROLE], server_settings={"search_path": schema})
        try:
            await conn.execute("RESET ROLE")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE TABLE intruder (i int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("SET ROLE postgres")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM audit_events")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await migrate(conn, f"{schema}_other")
        finally:
            await conn.close()

        ingest = IngestProcess(stack, tmp_path / "ingest.log", database_url=dsn[INGEST_ROLE])
        try:
            await ingest.wait_ready()
            await stack.produce([heart_rate(PATIENT_A, 140), (b"x", b"not json")])
            db = await stack.db()

            async def stored_and_relayed() -> bool:
                return bool(
                    await db.fetchval("SELECT count(*) FROM readings") == 1
                    and await db.fetchval(
                        "SELECT count(*) FROM episode_events WHERE published_at IS NOT NULL"
                    )
                    >= 1
                    and await db.fetchval(
                        "SELECT count(*) FROM dead_letters WHERE published_at IS NOT NULL"
                    )
                    == 1
                )

            await eventually(
                stored_and_relayed, 60, "readings stored, episode events and DLQ relayed"
            )
        finally:
            ingest.terminate()
            assert ingest.wait(40) == 0, ingest.log[-3000:]
        assert "Traceback" not in ingest.log

        with api_process(stack, tmp_path / "api.log", database_url=dsn[API_ROLE]) as (url, _):
            issuer = DevIssuer(f"{url}/dev-issuer", tmp_path / "dev.pem")
            token = issuer.token("dr-a", None, stack.settings.oidc_audience)
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:

                async def serving() -> bool:
                    with contextlib.suppress(httpx.HTTPError):
                        return (await client.get("/healthz")).status_code == 200
                    return False

                await eventually(serving, 30, "the API")
                answer = await client.get(
                    "/api/v1/patients", headers={"Authorization": f"Bearer {token}"}
                )
        assert answer.status_code == 200, (tmp_path / "api.log").read_text()
        assert [p["patient_id"] for p in answer.json()] == [PATIENT_A]


def run_api_briefly(stack: Stack, tmp_path: Path, **overrides: object) -> tuple[int, str]:
    env = stack.environment(
        api_port=free_port(), api_metrics_port=0, dev_issuer_key_file=tmp_path / "dev.pem"
    )
    env.update({f"TELEMON_{k.upper()}": str(v) for k, v in overrides.items()})
    done = subprocess.run(
        [sys.executable, "-m", "ingest.cli", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_the_api_never_migrates_and_says_so_in_one_line(stack: Stack, tmp_path: Path) -> None:
    code, output = run_api_briefly(stack, tmp_path, database_schema="never_migrated")
    assert code == 2, output
    assert "run `telemon migrate`" in output
    assert "Traceback" not in output


def test_an_unreachable_database_is_one_line_not_a_traceback(stack: Stack, tmp_path: Path) -> None:
    unreachable = f"postgresql://nobody:secret-password@127.0.0.1:{free_port()}/telemon"
    code, output = run_api_briefly(stack, tmp_path, database_url=unreachable)
    assert code == 1, output
    assert "cannot connect to PostgreSQL" in output
    assert "Traceback" not in output
    assert "secret-password" not in output


def test_dev_token_refuses_a_production_issuer(stack: Stack, tmp_path: Path) -> None:
    env = stack.environment(dev_issuer_key_file=tmp_path / "dev.pem", api_port=free_port())
    command = [sys.executable, "-m", "ingest.cli", "dev-token", "--subject", "dr-a"]
    minted = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    assert minted.returncode == 0, minted.stderr
    claims = json.loads(base64.urlsafe_b64decode(minted.stdout.split(".")[1] + "=="))
    assert claims["exp"] - claims["iat"] <= stack.settings.api_max_token_lifetime_s
    env["TELEMON_OIDC_ISSUER"] = "https://idp.example.org/realms/telemon"
    refused = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    assert refused.returncode == 2
    assert "development tokens only" in refused.stderr
    assert refused.stdout == ""
