"""Who is asking: OpenID Connect bearer tokens, and a development issuer.

A clinician presents `Authorization: Bearer <JWT>`. The token is accepted when
it is signed by a key the configured issuer publishes (its discovery document
names the JWKS), its `iss` is that issuer, its `aud` is ours and it has not
expired. Pro Santé Connect, like a hospital's identity provider, is such an
issuer. The subject (`sub`) is the clinician's identity; which patients they
may see is decided by their care teams, in PostgreSQL (row-level security).

The development issuer is the same protocol served by the API itself at
/dev-issuer, with an RSA key kept in a file: the demo and the tests log in
through exactly the path production uses.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ingest.platform import Clock, SystemClock

__all__ = ["Clinician", "DevIssuer", "IssuerUnavailable", "TokenError", "TokenVerifier"]

_ALGORITHMS = ("RS256", "ES256", "PS256")
MAX_TOKEN_CHARS = 8192  # an OpenID Connect access token is a few hundred bytes to 2 KB
_SUBJECT = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")
_LEEWAY_S = 30.0  # clock skew between the issuer and us


class TokenError(Exception):
    """A missing, malformed, expired or untrusted token (HTTP 401)."""


class IssuerUnavailable(TokenError):  # noqa: N818 - a condition, as TokenError
    """The issuer's discovery document or keys could not be fetched (HTTP 503)."""


@dataclass(frozen=True, slots=True)
class Clinician:
    subject: str
    name: str
    expires_at_s: float = math.inf  # the token's `exp` (Unix seconds): the feed ends there


class TokenVerifier:
    """Validates bearer tokens against an issuer's published keys (cached, refreshed on an
    unknown key id, so the issuer can rotate keys).

    A token is accepted when its header names an accepted algorithm that is the algorithm
    of the published key it names (`kid`), its signature verifies with that key, `iss` and
    `aud` are ours, `sub` is a non-empty name, `iat` and `exp` are present, it has not
    expired (nor is it not yet valid) on the injected clock, and it lives no longer than
    `max_lifetime_s`. Whatever the token holds, the answer is a Clinician or a TokenError.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        max_lifetime_s: float = 12 * 3600,
        clock: Clock | None = None,
    ) -> None:
        self._issuer = issuer.rstrip("/")
        self._audience = audience
        self._max_lifetime_s = max_lifetime_s
        self._clock = clock or SystemClock()
        self._jwks: jwt.PyJWKClient | None = None

    async def verify(self, token: str) -> Clinician:
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError(f"invalid token: longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm not in _ALGORITHMS:
                raise TokenError(f"invalid token: algorithm {_short(algorithm)} is not accepted")
            key = await asyncio.to_thread(self._signing_key, token)
            if key.algorithm_name != algorithm:
                raise TokenError("invalid token: its algorithm is not its key's")
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                # Times are checked below, on the injected clock.
                options={
                    "require": ["exp", "iat", "iss", "aud", "sub"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except TokenError:
            raise
        except (jwt.PyJWKClientConnectionError, OSError) as error:
            raise IssuerUnavailable(
                f"the identity provider cannot be reached: {_short(error)}"
            ) from error
        # Whatever a crafted token makes the library raise, it is not a valid token.
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError) as error:
            raise TokenError(f"invalid token: {_short(error)}") from error
        return self._clinician(claims)

    def _clinician(self, claims: dict[str, Any]) -> Clinician:
        now = self._clock.now_ms() / 1000
        times = {name: claims.get(name) for name in ("exp", "iat", "nbf")}
        for name, value in times.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise TokenError(f"invalid token: {name} is not a time")
        exp, iat, nbf = float(claims["exp"]), float(claims["iat"]), times["nbf"]
        if exp <= now - _LEEWAY_S:
            raise TokenError("invalid token: it has expired")
        if iat > now + _LEEWAY_S or (nbf is not None and nbf > now + _LEEWAY_S):
            raise TokenError("invalid token: it is not valid yet")
        if exp - iat > self._max_lifetime_s:
            raise TokenError(f"invalid token: it lives longer than {self._max_lifetime_s:.0f} s")
        subject = claims["sub"]
        if not isinstance(subject, str) or not _SUBJECT.match(subject):
            raise TokenError("invalid token: sub must be a name of 1 to 255 characters")
        name = claims.get("name") or claims.get("preferred_username") or subject
        return Clinician(subject=subject, name=_short(name, 255), expires_at_s=exp)

    def _signing_key(self, token: str) -> jwt.PyJWK:
        if self._jwks is None:
            url = f"{self._issuer}/.well-known/openid-configuration"
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - configured URL
                discovery = json.load(response)
            self._jwks = jwt.PyJWKClient(discovery["jwks_uri"], lifespan=3600, timeout=5)
        return self._jwks.get_signing_key_from_jwt(token)


def _short(value: object, limit: int = 120) -> str:
    """A printable, bounded rendering of something a client sent (errors echo it)."""
    text = value if isinstance(value, str) else repr(value)
    text = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m[0]):02x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DevIssuer:
    """A development OpenID Connect issuer: discovery, JWKS and token minting, one RSA key."""

    KEY_ID = "telemon-dev"

    def __init__(self, issuer: str, key_file: Path) -> None:
        self.issuer = issuer.rstrip("/")
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            key_file.touch(mode=0o600)
            key_file.write_bytes(pem)
        private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        assert isinstance(private, rsa.RSAPrivateKey)
        self._private = private

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks",
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["id_token"],
        }

    def jwks(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(
            jwt.algorithms.RSAAlgorithm.to_jwk(self._private.public_key())
        )
        jwk.update(kid=self.KEY_ID, use="sig", alg="RS256")
        return {"keys": [jwk]}

    def token(
        self, subject: str, name: str | None, audience: str, lifetime_s: int = 12 * 3600
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "name": name or subject,
            "iat": now,
            "exp": now + lifetime_s,
        }
        return jwt.encode(claims, self._private, algorithm="RS256", headers={"kid": self.KEY_ID})
