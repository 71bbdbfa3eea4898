"""OAuth 2.0 token flows against ``{login_url}/services/oauth2/token``.

Why our own: simple-salesforce and aiosfstream-ng hard-code
``login.salesforce.com`` hosts and support different subsets of the flows;
sfsync needs all four (password, JWT bearer, refresh token, client
credentials) against any login URL (a sandbox, My Domain, the emulator), and
hands the resulting token to both libraries.

Contract: :func:`fetch_token` returns a :class:`Token` or raises
:class:`AuthenticationFailed` carrying Salesforce's ``error`` code and
description — never a password, secret, assertion or token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import requests

from sfsync.config import AuthFlow, SalesforceConfig

TOKEN_PATH = "/services/oauth2/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class AuthenticationFailed(Exception):
    """The token endpoint refused us (bad credentials, inactive user, unreachable)."""

    def __init__(self, error: str, description: str, status: int | None = None) -> None:
        self.error = error
        self.description = description
        self.status = status
        super().__init__(f"Salesforce authentication failed: {error}: {description}")


@dataclass(frozen=True)
class Token:
    """An access token and the instance it is valid for. ``repr`` hides the token."""

    access_token: str = field(repr=False)
    instance_url: str
    token_type: str = "Bearer"
    issued_at: float = field(default_factory=time.time)
    raw: dict[str, str] = field(default_factory=dict, repr=False)


def _verify(cfg: SalesforceConfig) -> str | bool:
    return str(cfg.ca_bundle) if cfg.ca_bundle else True


def _jwt_assertion(cfg: SalesforceConfig) -> str:
    auth = cfg.auth
    assert auth.private_key_file is not None and auth.username  # guaranteed by config validation
    try:
        key = Path(auth.private_key_file).read_bytes()
    except OSError as e:
        raise AuthenticationFailed("invalid_request", f"cannot read private_key_file: {e.strerror}") from None
    claims = {"iss": auth.client_id, "sub": auth.username, "aud": cfg.login_url, "exp": int(time.time()) + 180}
    return jwt.encode(claims, key, algorithm="RS256")


def token_request(cfg: SalesforceConfig) -> tuple[dict[str, str], tuple[str, str] | None]:
    """Form body (and HTTP basic credentials, for client credentials) of the configured flow."""
    auth = cfg.auth
    secret = auth.client_secret.get_secret_value() if auth.client_secret else ""
    if auth.flow is AuthFlow.PASSWORD:
        assert auth.password is not None
        token = auth.security_token.get_secret_value() if auth.security_token else ""
        body = {"grant_type": "password", "client_id": auth.client_id, "username": auth.username or "",
                "password": auth.password.get_secret_value() + token}
        if secret:
            body["client_secret"] = secret
        return body, None
    if auth.flow is AuthFlow.REFRESH_TOKEN:
        assert auth.refresh_token is not None
        body = {"grant_type": "refresh_token", "client_id": auth.client_id,
                "refresh_token": auth.refresh_token.get_secret_value()}
        if secret:
            body["client_secret"] = secret
        return body, None
    if auth.flow is AuthFlow.JWT_BEARER:
        return {"grant_type": JWT_GRANT, "assertion": _jwt_assertion(cfg)}, None
    return {"grant_type": "client_credentials"}, (auth.client_id, secret)


def fetch_token(cfg: SalesforceConfig, session: requests.Session | None = None) -> Token:
    """Run the configured flow once."""
    body, basic = token_request(cfg)
    http = session or requests.Session()
    try:
        resp = http.post(cfg.login_url + TOKEN_PATH, data=body, auth=basic, verify=_verify(cfg),
                         timeout=cfg.request_timeout_s)
    except requests.RequestException as e:
        raise AuthenticationFailed("unreachable", f"{cfg.login_url}: {type(e).__name__}") from None
    try:
        payload = resp.json()
    except ValueError:
        payload = {}
    if resp.status_code != 200 or "access_token" not in payload:
        raise AuthenticationFailed(
            str(payload.get("error", f"http_{resp.status_code}")),
            str(payload.get("error_description", "no token in the response")),
            resp.status_code,
        )
    instance = (cfg.instance_url or payload.get("instance_url") or cfg.login_url).rstrip("/")
    return Token(payload["access_token"], instance, payload.get("token_type", "Bearer"), raw=payload)
