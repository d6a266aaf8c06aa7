"""Throwaway RSA keys for the Gmail emulator, generated at run time (never committed).

Two key pairs: the test service account's (the connector signs its JWT-bearer assertion
with it; the emulator's token endpoint verifies it) and the Pub/Sub push signer's (the
emulator signs OIDC tokens with it; the connector verifies them against the certs endpoint).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailtriage.sandbox.server import self_signed_pem

GOOGLE_ISSUER = "https://accounts.google.com"


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass
class ServiceAccountKey:
    """A test service account: its JSON key file content and public key."""

    client_email: str = "mailtriage-test@sandbox-project.iam.gserviceaccount.com"
    client_id: str = "104242424242424242424"
    key: rsa.RSAPrivateKey = field(default_factory=_new_key)
    key_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def info(self, token_uri: str) -> dict[str, str]:
        """The `service_account` JSON key, as the Cloud console would hand it out (TEST KEY)."""
        return {
            "type": "service_account",
            "project_id": "sandbox-project",
            "private_key_id": self.key_id,
            "private_key": _private_pem(self.key),
            "client_email": self.client_email,
            "client_id": self.client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        }

    def json(self, token_uri: str) -> str:
        return json.dumps(self.info(token_uri))

    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


@dataclass
class PushSigner:
    """Signs Pub/Sub push OIDC tokens with a test key and serves its certificate."""

    service_account: str = "pubsub-push@sandbox-project.iam.gserviceaccount.com"
    key: rsa.RSAPrivateKey = field(default_factory=_new_key)
    kid: str = field(default_factory=lambda: uuid.uuid4().hex)
    cert_pem: str = ""

    def __post_init__(self) -> None:
        self.cert_pem = self_signed_pem(self.key, "sandbox-pubsub-signer")

    def certs(self) -> dict[str, str]:
        """`{"kid": "PEM x509"}`, what `google.oauth2.id_token.verify_token` reads."""
        return {self.kid: self.cert_pem}

    def claims(self, audience: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": audience,
            "azp": "113774264463038321964",
            "email": self.service_account,
            "email_verified": True,
            "exp": now + 3600,
            "iat": now,
            "iss": GOOGLE_ISSUER,
            "sub": "113774264463038321964",
        }
        claims.update(overrides)
        return claims

    def sign(self, claims: dict[str, Any], key: rsa.RSAPrivateKey | None = None) -> str:
        """An RS256 JWT; pass another `key` to forge one that must be rejected."""
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})


def new_rsa_key() -> rsa.RSAPrivateKey:
    """A fresh key, e.g. to forge a push token the webhook must reject."""
    return _new_key()
