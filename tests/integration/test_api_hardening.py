"""What the attack on the clinicians' API found (issue 20), each point against the real API
on the real PostgreSQL: the live feed ends with its token; crafted tokens are refused and
audited; every refusal and error is audited once, with bounded rows, and anonymous
refusals are rate-limited; inputs beyond bounds are 400, never 500; security headers, local
Swagger UI, an OpenAPI documenting every status; no believed X-Forwarded-For or Host; an
error tells the client nothing and its audit record survives in the log."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from alerts.actions import acknowledge, escalate, resolve
from alerts.model import Disposition
from ingest.api.audit import query_audit
from tests.feed_support import (
    PATIENT_A,
    PATIENT_B,
    ManualClock,
    RunningApi,
    an_episode,
    running_api,
    two_teams,
)
from tests.support import Stack, TcpProxy, eventually


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def audit_rows(stack: Stack) -> list[dict[str, Any]]:
    async with stack.connection() as conn:
        return await query_audit(conn)


async def sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each message of a stream, until it ends."""
    fields: dict[str, str] = {}
    async for line in lines:
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
            continue
        if "event" in fields:
            yield fields["event"], fields.get("data", "")
        fields = {}


async def test_the_live_feed_ends_when_its_token_expires(stack: Stack, tmp_path: Path) -> None:
    await two_teams(stack)
    episode = await an_episode(stack, PATIENT_A)
    clock = ManualClock()
    async with running_api(stack, tmp_path / "dev.pem", clock=clock) as api:
        token = api.token("dr-a", lifetime_s=600)
        async with httpx.AsyncClient(base_url=api.url, headers=bearer(token), timeout=20) as dr_a:
            start = (await dr_a.get("/api/v1/worklist")).json()["feed_position"]
            async with dr_a.stream(
                "GET", "/api/v1/events", headers={"Last-Event-ID": start}
            ) as response:
                messages = sse(response.aiter_lines())
                assert await anext(messages) == ("position", json.dumps(start))
                async with stack.connection() as conn:
                    await acknowledge(conn, episode, "dr-a")
                kind, data = await asyncio.wait_for(anext(messages), 20)
                assert (kind, json.loads(data)["type"]) == ("episode", "acknowledged")

                clock.advance(700)  # the token has expired (and its leeway); then an event happens
                async with stack.connection() as conn:
                    await escalate(conn, episode, "dr-a", "to the physician")
                rest = await asyncio.wait_for(_all(messages), 20)  # the server closes
            assert [kind for kind, _ in rest] == ["end"]
            assert (await dr_a.get("/api/v1/worklist")).status_code == 401
        assert "telemon_feed_expired_total 1.0" in await api.metrics()
        assert "telemon_feed_clients 0.0" in await api.metrics()


async def test_the_live_feed_follows_team_membership_as_it_changes(
    stack: Stack, tmp_path: Path
) -> None:
    """Each read is made as the clinician: moved from team A to team B mid-stream, dr-a gets
    B's next event and never A's, though A's came first."""
    await two_teams(stack)
    episode_a, episode_b = await an_episode(stack, PATIENT_A), await an_episode(stack, PATIENT_B)
    async with running_api(stack, tmp_path / "dev.pem") as api, api.client("dr-a") as dr_a:
        start = (await dr_a.get("/api/v1/worklist")).json()["feed_position"]
        async with dr_a.stream("GET", "/api/v1/events", headers={"Last-Event-ID": start}) as r:
            messages = sse(r.aiter_lines())
            assert (await anext(messages))[0] == "position"
            async with stack.connection() as conn:
                await conn.execute("UPDATE care_team_members SET team_id = 'team-b'")
                await acknowledge(conn, episode_a, "someone")
                await acknowledge(conn, episode_b, "someone")
            kind, data = await asyncio.wait_for(anext(messages), 20)
    assert (kind, json.loads(data)["episode"]["patient_id"]) == ("episode", PATIENT_B)


async def _all(messages: AsyncIterator[tuple[str, str]]) -> list[tuple[str, str]]:
    return [m async for m in messages]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], key: bytes = b"") -> str:
    """A token with any header, signed with HMAC-SHA256 over `key` (or not at all)."""
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing}.{_b64(signature)}"


def crafted_tokens(api: RunningApi) -> dict[str, str]:
    now = int(datetime.now(UTC).timestamp())
    claims = {"iss": api.issuer.issuer, "aud": api.audience, "sub": "dr-a", "iat": now}
    claims["exp"] = now + 600
    public = api.issuer.jwks()["keys"][0]
    foreign_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    foreign_ec = ec.generate_private_key(ec.SECP256R1())
    real = api.issuer._private  # the development issuer's own key
    kid = api.issuer.KEY_ID
    return {
        "alg none": forged({"alg": "none", "kid": kid}, claims),
        "HS256 with the public key": forged(
            {"alg": "HS256", "kid": kid}, claims, json.dumps(public).encode()
        ),
        "ES256 under the RSA key's id": jwt.encode(
            claims, foreign_ec, algorithm="ES256", headers={"kid": kid}
        ),
        "a foreign key under the real kid": jwt.encode(
            claims, foreign_rsa, algorithm="RS256", headers={"kid": kid}
        ),
        "jku elsewhere": jwt.encode(
            claims,
            foreign_rsa,
            algorithm="RS256",
            headers={"kid": kid, "jku": "http://127.0.0.1:9/jwks", "x5u": "http://127.0.0.1:9"},
        ),
        "NUL in the kid": jwt.encode(claims, real, algorithm="RS256", headers={"kid": "a\x00b"}),
        "a 6 KB kid": jwt.encode(claims, real, algorithm="RS256", headers={"kid": "k" * 6_000}),
        "wrong issuer": jwt.encode(
            {**claims, "iss": "https://elsewhere"}, real, algorithm="RS256", headers={"kid": kid}
        ),
        "expired": api.issuer.token("dr-a", None, api.audience, lifetime_s=-60),
        "ten years": api.issuer.token("dr-a", None, api.audience, lifetime_s=10 * 365 * 86400),
        "empty subject": api.issuer.token("", None, api.audience),
        "no iat": jwt.encode(
            {k: v for k, v in claims.items() if k != "iat"},
            real,
            algorithm="RS256",
            headers={"kid": kid},
        ),
        "not yet valid": jwt.encode(
            {**claims, "iat": now + 3600, "exp": now + 4000},
            real,
            algorithm="RS256",
            headers={"kid": kid},
        ),
    }


async def test_crafted_tokens_are_refused_and_audited_in_bounded_rows(
    stack: Stack, tmp_path: Path
) -> None:
    await two_teams(stack)
    async with running_api(stack, tmp_path / "dev.pem") as api, api.client(None) as nobody:
        tokens = crafted_tokens(api)
        for what, token in tokens.items():
            response = await nobody.get(f"/api/v1/patients/{PATIENT_A}", headers=bearer(token))
            assert response.status_code == 401, (what, response.text)
            assert len(response.text) < 400, what  # nothing the client sent is echoed whole
        # A 50 KB key id: refused by the HTTP server (400) or by its length (401).
        huge = forged({"alg": "RS256", "kid": "k" * 50_000}, {"sub": "x"})
        assert (await nobody.get("/api/v1/worklist", headers=bearer(huge))).status_code in {
            400,
            401,
        }
        nul_path = await nobody.get("/api/v1/patients/a%00b", headers=bearer(api.token("dr-a")))
        assert nul_path.status_code == 400
        unknown = await nobody.get("/no%00such/path")
        assert unknown.status_code == 404
    rows = [r for r in await audit_rows(stack) if r["entity"] != "GET /api/v1/worklist"]
    assert len(rows) == len(tokens) + 2  # every refusal, once
    refused = [r for r in rows if r["subtype"] == "authenticate"]
    assert [(r["http_status"], r["agent"]) for r in refused] == [(401, None)] * len(tokens)
    assert all(len(json.dumps(r)) < 2_000 for r in rows), "an audit row is unbounded"
    assert "GET /no\\x00such/path" in {r["entity"] for r in rows}


async def test_refused_anonymous_requests_are_rate_limited_and_audited_once(
    stack: Stack, tmp_path: Path
) -> None:
    clock = ManualClock()
    async with (
        running_api(
            stack,
            tmp_path / "dev.pem",
            clock=clock,
            api_failed_auth_burst=3,
            api_failed_auth_per_min=6,
        ) as api,
        api.client(None) as nobody,
    ):
        statuses = [(await nobody.get("/api/v1/worklist")).status_code for _ in range(10)]
        assert statuses == [401] * 3 + [429] * 7
        limited = await nobody.get("/api/v1/worklist")
        assert int(limited.headers["Retry-After"]) == 10  # one token per 10 s
        clock.advance(10)
        assert (await nobody.get("/api/v1/worklist")).status_code == 401
    rows = await audit_rows(stack)
    assert sorted(r["http_status"] for r in rows) == [401] * 4 + [429]  # 429 once per spell


async def test_a_clinicians_requests_are_rate_limited(stack: Stack, tmp_path: Path) -> None:
    await two_teams(stack)
    clock = ManualClock()
    async with (
        running_api(
            stack, tmp_path / "dev.pem", clock=clock, api_rate_burst=3, api_rate_per_s=1
        ) as api,
        api.client("dr-a") as dr_a,
    ):
        statuses = [(await dr_a.get("/api/v1/patients")).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        clock.advance(1)
        assert (await dr_a.get("/api/v1/patients")).status_code == 200


async def test_every_refusal_is_audited_once_with_its_patient(stack: Stack, tmp_path: Path) -> None:
    await two_teams(stack)
    episode_a, episode_b = await an_episode(stack, PATIENT_A), await an_episode(stack, PATIENT_B)
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    async with running_api(stack, tmp_path / "dev.pem") as api, api.client("dr-a") as dr_a:
        requests = [
            ("GET", f"/api/v1/patients/{PATIENT_B}/readings?since=garbage", None, 400, PATIENT_B),
            (
                "GET",
                f"/fhir/Patient/{PATIENT_A}/$everything?start=2026-02-01T00:00:00Z"
                "&end=2026-01-01T00:00:00Z",
                None,
                400,
                PATIENT_A,
            ),
            ("POST", f"/api/v1/episodes/{episode_a}/snooze", {"until": past}, 400, PATIENT_A),
            ("GET", "/api/v1/events?after=nonsense", None, 400, None),
            ("GET", f"/api/v1/episodes/{episode_b}", None, 404, PATIENT_B),
            (
                "POST",
                f"/api/v1/episodes/{episode_b}/resolve",
                {"disposition": "advice_given"},
                404,
                PATIENT_B,
            ),
        ]
        for method, path, body, status, _ in requests:
            response = await dr_a.request(method, path, json=body)
            assert response.status_code == status, (path, response.text)
            assert response.json()["error"]
        unknown = await dr_a.get("/api/v1/nothing-here")  # no route, so no sign-in either
        assert unknown.status_code == 404
        assert unknown.json()["error"]
        garbled = await dr_a.put(
            f"/api/v1/patients/{PATIENT_A}/overrides/heart_rate.red_at_or_below",
            content=b"\x80{",
            headers={"Content-Type": "application/json"},
        )
        assert garbled.status_code == 400
        assert garbled.json()["error"]
    # Recorded after the answer, so not necessarily in the order asked: by request.
    rows = {r["entity"]: r for r in await audit_rows(stack)}
    assert len(rows) == len(requests) + 2
    assert rows["GET /api/v1/nothing-here"]["agent"] is None
    for method, path, _, status, patient in requests:
        row = rows[f"{method} {path.split('?')[0]}"]
        assert (row["http_status"], row["agent"], row["patient_id"]) == (status, "dr-a", patient)


BEYOND_BOUNDS: list[tuple[str, str, Any]] = [
    ("GET", "/api/v1/episodes/99999999999999999999", None),
    ("GET", "/api/v1/worklist?offset=99999999999999999999", None),
    ("GET", "/api/v1/worklist?programme=a%00b", None),
    ("GET", "/api/v1/patients/a%00b/episodes", None),
    ("GET", f"/api/v1/patients/{PATIENT_A}/readings?since=0001-01-01T00:00:00%2B05:00", None),
    ("GET", f"/api/v1/patients/{PATIENT_A}/readings?until=9999-12-31T23:59:59-05:00", None),
    ("GET", f"/fhir/Patient/{PATIENT_A}/$everything?start=0001-01-01T00:30:00%2B01:00", None),
    ("GET", "/api/v1/events?after=99999999999999999999-1", None),
    ("POST", "/api/v1/episodes/1/resolve", {"disposition": "advice_given", "note": "a\x00b"}),
    ("POST", "/api/v1/episodes/1/escalate", {"note": "a\x00b"}),
    ("PUT", f"/api/v1/patients/{PATIENT_A}/overrides/heart_rate.red_at_or_below", {"value": "NaN"}),
    ("PUT", f"/api/v1/patients/{PATIENT_A}/overrides/heart_rate.red_at_or_below", {"value": 1e308}),
    ("PUT", f"/api/v1/patients/{PATIENT_A}/overrides/heart_rate.red_at_or_below", {"value": -5}),
    ("PUT", f"/api/v1/patients/{PATIENT_A}/overrides/a%00b", {"value": 5}),
]


async def test_inputs_beyond_bounds_are_refused_with_400(stack: Stack, tmp_path: Path) -> None:
    """Ids and offsets beyond 64 bits, dates PostgreSQL cannot hold, NUL bytes, thresholds
    that are not numbers: each a 400 (these were 500s)."""
    await two_teams(stack)
    async with running_api(stack, tmp_path / "dev.pem") as api, api.client("dr-a") as dr_a:
        for method, path, body in BEYOND_BOUNDS:
            content = None if body is None else json.dumps(body).replace('"NaN"', "NaN")
            response = await dr_a.request(
                method, path, content=content, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 400, (path, body, response.text)
            assert response.json()["error"].startswith("bad request"), path


async def test_security_headers_local_swagger_ui_and_a_complete_openapi(
    stack: Stack, tmp_path: Path
) -> None:
    await two_teams(stack)
    async with running_api(stack, tmp_path / "dev.pem") as api, api.client("dr-a") as dr_a:
        page, data, docs = [await dr_a.get(p) for p in ("/", "/api/v1/patients", "/docs")]
        for response in (page, data, docs):
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["X-Frame-Options"] == "DENY"
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
            assert response.headers["Cache-Control"] == "no-store"
        policy = page.headers["Content-Security-Policy"]
        # The page's inline script and style by their hash (uPlot's files from this origin).
        for tag in ("script", "style"):
            (inline,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page.text, flags=re.DOTALL)
            digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
            assert f"{tag}-src 'self' 'sha256-{digest}';" in policy, tag
        assert "unsafe-inline" not in policy
        assert "https://" not in docs.text
        assert "cdn" not in docs.text
        assets = [a for a in docs.text.split('"') if a.startswith("/static/")]
        assert len(assets) == 4
        for asset in assets:
            assert (await dr_a.get(asset)).status_code == 200
        assert (await dr_a.get("/metrics")).status_code == 404  # on the metrics port only
        assert "telemon_episodes_open" in await api.metrics()
        openapi = (await dr_a.get("/openapi.json")).json()
    for path, operations in openapi["paths"].items():
        for operation in operations.values():
            statuses = set(operation["responses"])
            assert "422" not in statuses
            assert {"200", "400", "401", "429", "503"} <= statuses, path
            assert ("404" in statuses) == ("{" in path), path
    for action in ("acknowledge", "resolve", "snooze", "escalate"):
        operation = openapi["paths"][f"/api/v1/episodes/{{episode_id}}/{action}"]["post"]
        assert "409" in operation["responses"], action
    assert "bearer" in json.dumps(openapi["components"]["securitySchemes"]).lower()


async def test_forwarded_for_and_host_are_not_believed_unless_configured(
    stack: Stack, tmp_path: Path
) -> None:
    await two_teams(stack)
    spoofed = {"X-Forwarded-For": "203.0.113.66", "Host": "attacker.example"}
    async with running_api(stack, tmp_path / "dev.pem") as api, api.client("dr-a") as dr_a:
        bundle = (await dr_a.get(f"/fhir/Patient/{PATIENT_A}/$everything", headers=spoofed)).json()
    assert all("attacker" not in e["fullUrl"] for e in bundle["entry"])
    assert bundle["entry"][0]["fullUrl"].startswith(f"{api.url.rsplit(':', 1)[0]}")
    async with (
        running_api(
            stack,
            tmp_path / "dev.pem",
            api_trusted_proxies="127.0.0.1",
            api_public_url="https://telemon.example.org",
        ) as api,
        api.client("dr-a") as dr_a,
    ):
        bundle = (await dr_a.get(f"/fhir/Patient/{PATIENT_A}/$everything", headers=spoofed)).json()
        page = await dr_a.get("/api/v1/patients")
    assert bundle["entry"][0]["fullUrl"].startswith("https://telemon.example.org/fhir/")
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    rows = [r for r in await audit_rows(stack) if r["subtype"] == "patient.export"]
    assert [r["network_address"] for r in rows] == ["127.0.0.1", "203.0.113.66"]


async def test_an_error_tells_nothing_and_its_audit_record_survives_in_the_log(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await two_teams(stack)
    assert stack.settings.database_url is not None
    proxy = TcpProxy(stack.settings.database_url)
    await proxy.start()
    try:
        async with (
            running_api(stack, tmp_path / "dev.pem", database_url=proxy.dsn) as api,
            api.client("dr-a") as dr_a,
        ):
            assert (await dr_a.get("/api/v1/patients")).status_code == 200
            await proxy.cut()
            with caplog.at_level(logging.ERROR):
                failed = await dr_a.get(f"/api/v1/patients/{PATIENT_A}")
            assert failed.status_code == 500
            assert failed.json() == {"error": "internal error: it is recorded"}
            lost = [
                r.getMessage() for r in caplog.records if "audit record not stored" in r.message
            ]
            assert len(lost) == 1
            assert f"/api/v1/patients/{PATIENT_A}" in lost[0]
            metrics = await api.metrics()
            assert "telemon_api_audit_failures_total 1.0" in metrics
            assert 'telemon_api_errors_total{status="500"} 1.0' in metrics
            await proxy.restore()
    finally:
        await proxy.cut()


async def test_stored_nan_override_is_served_as_documented(stack: Stack, tmp_path: Path) -> None:
    """An operator's NaN (a bound switched off) is null in the API, as its schema says, and
    no line on the patient's charts."""
    await two_teams(stack)
    async with stack.connection() as conn:
        await conn.execute(
            "INSERT INTO threshold_overrides (patient_key, parameter, value, changed_by) "
            "SELECT patient_key, 'heart_rate.red_at_or_below', 'NaN', 'operator' FROM patients "
            "WHERE patient_id = $1",
            PATIENT_A,
        )
    async with running_api(stack, tmp_path / "dev.pem") as api, api.client("dr-a") as dr_a:
        overrides = await dr_a.get(f"/api/v1/patients/{PATIENT_A}/overrides")
        lines = await dr_a.get(f"/api/v1/patients/{PATIENT_A}/thresholds")
    assert overrides.status_code == 200
    assert overrides.json()[0]["value"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for v in overrides.json()[0].values())
    # The charts leave the switched-off bound out (it was a 500).
    assert lines.status_code == 200, lines.text
    drawn = {(line["rule_id"], line["parameter"]) for line in lines.json()}
    assert ("heart_rate", "red_at_or_above") in drawn
    assert ("heart_rate", "red_at_or_below") not in drawn


async def test_live_feeds_per_clinician_are_capped(stack: Stack, tmp_path: Path) -> None:
    await two_teams(stack)
    async with (
        running_api(stack, tmp_path / "dev.pem", api_max_streams_per_clinician=1) as api,
        api.client("dr-a") as dr_a,
    ):
        async with dr_a.stream("GET", "/api/v1/events") as first:
            assert first.status_code == 200
            second = await dr_a.get("/api/v1/events")
            assert second.status_code == 429

        async def slot_given_back() -> bool:
            async with dr_a.stream("GET", "/api/v1/events") as again:
                return again.status_code == 200

        await eventually(slot_given_back, 10, "the closed feed's slot")


async def test_an_episode_resolved_meanwhile_is_a_conflict_not_an_error(
    stack: Stack, tmp_path: Path
) -> None:
    """Two clinicians resolve the same episode at once: the second, which read it open, waits
    for the first and is answered 409 (it was a 500)."""
    await two_teams(stack)
    episode = await an_episode(stack, PATIENT_A)
    db = await stack.db()
    async with (
        running_api(stack, tmp_path / "dev.pem") as api,
        api.client("dr-a") as dr_a,
        stack.connection() as first,
    ):
        async with first.transaction():
            await resolve(first, episode, "dr-b", Disposition.ADVICE_GIVEN, None)
            second = asyncio.create_task(
                dr_a.post(f"/api/v1/episodes/{episode}/resolve", json={"disposition": "artefact"})
            )

            async def waiting_for_the_first() -> bool:
                waiting: int = await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%FROM episodes WHERE episode_id = $1 FOR UPDATE%'"
                )
                return waiting == 1

            await eventually(waiting_for_the_first, 10, "the second resolution waiting")
        answer = await second
    assert answer.status_code == 409, answer.text
    assert "already resolved" in answer.json()["error"]
    row = await db.fetchrow("SELECT resolved_by, disposition FROM episodes")
    assert row is not None
    assert (row["resolved_by"], row["disposition"]) == ("dr-b", "advice_given")
