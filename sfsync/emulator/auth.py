"""OAuth 2.0 token endpoint logic and session bookkeeping.

Grants: ``password``, ``refresh_token``, ``urn:ietf:params:oauth:grant-type:jwt-bearer`` (RS256 signature
checked against a configured certificate) and ``client_credentials`` (runs as the admin user). Any
client id/secret is accepted unless ``client_id``/``client_secret`` are configured.

Sessions: access tokens look like Salesforce's (``00D<org id>!<opaque>``); each lives for
``session_lifetime_seconds`` (configurable) and can be expired on demand. :meth:`Auth.session_for`
returns None for an unknown or expired token; the HTTP layer turns that into 401 INVALID_SESSION_ID.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

ORG_ID = "00D8d000000EMUL"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")


class OAuthError(Exception):
    """A token-endpoint failure rendered as ``{"error", "error_description"}``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        """The JSON body Salesforce returns."""
        return {"error": self.error, "error_description": self.description}


@dataclass
class Session:
    """One issued access token."""

    token: str
    user_id: str
    username: str
    issued_at: float
    expires_at: float

    def valid(self, now: float) -> bool:
        """True until the session's lifetime ends or it is expired on demand."""
        return now < self.expires_at


@dataclass
class AuthConfig:
    """Configurable credentials and lifetimes."""

    username: str = "admin@example.com"
    password: str = "sfsync"
    security_token: str = ""
    client_id: str | None = None
    client_secret: str | None = None
    session_lifetime_seconds: float = 7200.0
    jwt_certificate_pem: str | None = None
    refresh_tokens: dict[str, str] = field(default_factory=dict)


class Auth:
    """Issues and checks sessions for the single emulated org."""

    def __init__(self, admin_id: str) -> None:
        self.config = AuthConfig()
        self.admin_id = admin_id
        self.sessions: dict[str, Session] = {}

    def reset(self, admin_id: str) -> None:
        """Forget sessions and refresh tokens (configuration is kept)."""
        self.admin_id = admin_id
        self.sessions.clear()
        self.config.refresh_tokens.clear()

    def session_for(self, authorization: str | None) -> Session | None:
        """The live session named by an ``Authorization: Bearer|OAuth <token>`` header value."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() not in ("bearer", "oauth"):
            return None
        session = self.sessions.get(token.strip())
        if session is None or not session.valid(time.time()):
            return None
        return session

    def expire(self, token: str | None = None) -> int:
        """Expire one session (or all when ``token`` is None); returns how many were live."""
        now = time.time()
        count = 0
        for session in self.sessions.values():
            if (token is None or session.token == token) and session.valid(now):
                session.expires_at = now
                count += 1
        return count

    def new_refresh_token(self) -> str:
        """Mint a refresh token for the admin user (what a web-server flow would have issued)."""
        token = "5Aep8" + secrets.token_urlsafe(48)
        self.config.refresh_tokens[token] = self.config.username
        return token

    # ------------------------------------------------------------------ grants
    def token(self, form: dict[str, str], basic_auth: tuple[str, str] | None, instance_url: str) -> dict[str, Any]:
        """Handle a token request; returns Salesforce's success JSON or raises OAuthError."""
        grant = form.get("grant_type", "")
        if grant == "password":
            self._check_client(form.get("client_id"), form.get("client_secret"))
            expected = self.config.password + self.config.security_token
            if form.get("username", "").lower() != self.config.username.lower() or form.get("password") != expected:
                raise OAuthError("invalid_grant", "authentication failure")
            return self._issue(instance_url)
        if grant == "refresh_token":
            self._check_client(form.get("client_id"), form.get("client_secret"))
            if form.get("refresh_token") not in self.config.refresh_tokens:
                raise OAuthError("invalid_grant", "expired access/refresh token")
            body = self._issue(instance_url)
            body["scope"] = "api refresh_token"
            return body
        if grant == JWT_GRANT:
            self._check_jwt(form.get("assertion", ""), instance_url)
            return self._issue(instance_url)
        if grant == "client_credentials":
            client_id, secret = basic_auth or (form.get("client_id", ""), form.get("client_secret", ""))
            if not client_id:
                raise OAuthError("invalid_client_id", "client identifier invalid")
            self._check_client(client_id, secret)
            return self._issue(instance_url)
        if not grant:
            raise OAuthError("invalid_request", "grant type not supported")
        raise OAuthError("unsupported_grant_type", "grant type not supported")

    def _check_client(self, client_id: str | None, secret: str | None) -> None:
        if self.config.client_id is not None and client_id != self.config.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if self.config.client_secret is not None and secret != self.config.client_secret:
            raise OAuthError("invalid_client", "invalid client credentials")

    def _check_jwt(self, assertion: str, instance_url: str) -> None:
        if not self.config.jwt_certificate_pem:
            raise OAuthError("invalid_client", "no certificate configured for the JWT bearer flow")
        cert = x509.load_pem_x509_certificate(self.config.jwt_certificate_pem.encode())
        key = cert.public_key()
        if not isinstance(key, RSAPublicKey):
            raise OAuthError("invalid_client", "certificate key must be RSA")
        try:
            claims = jwt.decode(assertion, key=key, algorithms=["RS256"], audience=[*AUDIENCES, instance_url],
                                options={"require": ["iss", "sub", "aud", "exp"]})
        except jwt.ExpiredSignatureError:
            raise OAuthError("invalid_grant", "expired authorization code") from None
        except jwt.InvalidAudienceError:
            raise OAuthError("invalid_grant", "audience is invalid") from None
        except jwt.PyJWTError:
            raise OAuthError("invalid_grant", "invalid assertion") from None
        if self.config.client_id is not None and claims.get("iss") != self.config.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if str(claims.get("sub", "")).lower() != self.config.username.lower():
            raise OAuthError("invalid_grant", "user hasn't approved this consumer")

    def _issue(self, instance_url: str) -> dict[str, Any]:
        now = time.time()
        token = f"{ORG_ID}!AQ{secrets.token_urlsafe(72)}"
        self.sessions[token] = Session(token=token, user_id=self.admin_id, username=self.config.username,
                                       issued_at=now, expires_at=now + self.config.session_lifetime_seconds)
        issued = str(int(now * 1000))
        identity = f"https://login.salesforce.com/id/{ORG_ID}AAA/{self.admin_id}"
        key = (self.config.client_secret or "sfsync-emulator").encode()
        signature = base64.b64encode(hmac.new(key, (identity + issued).encode(), hashlib.sha256).digest()).decode()
        return {"access_token": token, "instance_url": instance_url, "id": identity, "token_type": "Bearer",
                "issued_at": issued, "signature": signature}
