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
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["Clinician", "DevIssuer", "TokenError", "TokenVerifier"]

_ALGORITHMS = ["RS256", "ES256", "PS256"]


class TokenError(Exception):
    """A missing, malformed, expired or untrusted token (HTTP 401)."""


@dataclass(frozen=True, slots=True)
class Clinician:
    subject: str
    name: str


class TokenVerifier:
    """Validates bearer tokens against an issuer's published keys (cached, refreshed on an
    unknown key id, so the issuer can rotate keys)."""

    def __init__(self, issuer: str, audience: str) -> None:
        self._issuer = issuer.rstrip("/")
        self._audience = audience
        self._jwks: jwt.PyJWKClient | None = None

    async def verify(self, token: str) -> Clinician:
        try:
            key = await asyncio.to_thread(self._signing_key, token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=_ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, OSError, ValueError) as error:
            raise TokenError(f"invalid token: {error}") from error
        name = claims.get("name") or claims.get("preferred_username") or claims["sub"]
        return Clinician(subject=str(claims["sub"]), name=str(name))

    def _signing_key(self, token: str) -> Any:
        if self._jwks is None:
            url = f"{self._issuer}/.well-known/openid-configuration"
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - configured URL
                discovery = json.load(response)
            self._jwks = jwt.PyJWKClient(discovery["jwks_uri"], lifespan=3600, timeout=5)
        return self._jwks.get_signing_key_from_jwt(token).key


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
