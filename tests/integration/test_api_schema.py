"""Schemathesis over the API's own OpenAPI, with a valid token, against the real API on the
real PostgreSQL: no input gives a 500, and every answer (status, content type, headers,
body) is one the OpenAPI documents.

A bounded run in `make test` (TELEMON_SCHEMATHESIS_EXAMPLES cases per operation, 25 by
default, seed TELEMON_SCHEMATHESIS_SEED, 20); the longer run of docs/operations.md raises
them. The live feed is left out: a
stream that lasts as long as its token is not a request/response (tests/integration/
test_feed.py and test_api_hardening.py test it, its bad positions included).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from tests.feed_support import PATIENT_A, an_episode, running_api, two_teams
from tests.support import Stack

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    stack: Stack, tmp_path: Path
) -> None:
    await two_teams(stack)
    await an_episode(stack, PATIENT_A)
    examples = os.environ.get("TELEMON_SCHEMATHESIS_EXAMPLES", "25")
    # Its negative cases leave the token out too: no rate limit may hide the logic.
    async with running_api(
        stack,
        tmp_path / "dev.pem",
        api_rate_burst=1_000_000,
        api_rate_per_s=1_000_000,
        api_failed_auth_burst=1_000_000,
        api_failed_auth_per_min=1_000_000,
    ) as api:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "st"),
            "run",
            f"{api.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {api.token('dr-a')}",
            "--checks",
            ",".join(CHECKS),
            "--exclude-path",
            "/api/v1/events",
            "--max-examples",
            examples,
            "--seed",
            os.environ.get("TELEMON_SCHEMATHESIS_SEED", "20"),
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "20",
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        )
        output, _ = await process.communicate()
    text = output.decode()
    (tmp_path / "schemathesis.txt").write_text(text)
    print(text[-1500:])  # the run's figures, in pytest's captured output
    assert process.returncode == 0, text[-6000:]
    assert re.search(r"\d+ passed", text), text[-2000:]
