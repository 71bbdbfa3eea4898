"""OAuth token endpoint and session expiry, over raw HTTPS and simple-salesforce."""

from __future__ import annotations

import base64
import time

import httpx
import jwt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession

from sfsync.devstack.emulator import EmulatorHandle

from .conftest import Raw

TOKEN_PATH = "/services/oauth2/token"


def _post_token(org: EmulatorHandle, data: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, dict]:
    with org.http_session() as session:
        response = session.post(org.url + TOKEN_PATH, data=data, headers=headers or {}, timeout=30)
    assert response.headers["Content-Type"].startswith("application/json")
    return response.status_code, response.json()


def test_password_grant_returns_salesforce_token_shape(org: EmulatorHandle) -> None:
    before_ms = int(time.time() * 1000)
    body = org.token_response()
    after_ms = int(time.time() * 1000)
    assert set(body) == {"access_token", "instance_url", "id", "token_type", "issued_at", "signature"}
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == org.url
    org_id, bang, _ = body["access_token"].partition("!")
    assert org_id.startswith("00D") and len(org_id) == 15 and bang == "!"
    assert body["id"].startswith("https://login.salesforce.com/id/00D")
    assert body["issued_at"].isdigit() and before_ms <= int(body["issued_at"]) <= after_ms  # same machine clock
    base64.b64decode(body["signature"])


def test_wrong_password_is_invalid_grant(org: EmulatorHandle) -> None:
    status, body = _post_token(org, {"grant_type": "password", "client_id": "x", "client_secret": "y",
                                     "username": org.username, "password": "nope"})
    assert (status, body) == (400, {"error": "invalid_grant", "error_description": "authentication failure"})


def test_security_token_is_appended_to_password(org: EmulatorHandle) -> None:
    org.control.config(security_token="TOK123")
    status, body = _post_token(org, {"grant_type": "password", "username": org.username, "password": org.password})
    assert status == 400 and body["error"] == "invalid_grant"
    body = org.token_response(password=org.password + "TOK123")
    assert body["access_token"].startswith("00D")


def test_configured_client_id_is_enforced(org: EmulatorHandle) -> None:
    org.control.config(client_id="good-app", client_secret="s3cret")
    status, body = _post_token(org, {"grant_type": "password", "client_id": "other", "client_secret": "s3cret",
                                     "username": org.username, "password": org.password})
    assert (status, body["error"]) == (400, "invalid_client_id")
    status, body = _post_token(org, {"grant_type": "password", "client_id": "good-app", "client_secret": "bad",
                                     "username": org.username, "password": org.password})
    assert (status, body) == (400, {"error": "invalid_client", "error_description": "invalid client credentials"})


def test_refresh_token_grant(org: EmulatorHandle) -> None:
    refresh = org.control.refresh_token()
    status, body = _post_token(org, {"grant_type": "refresh_token", "client_id": "a", "client_secret": "b",
                                     "refresh_token": refresh})
    assert status == 200 and body["token_type"] == "Bearer" and body["scope"] == "api refresh_token"
    status, body = _post_token(org, {"grant_type": "refresh_token", "refresh_token": "5Aep8bogus"})
    assert (status, body["error"]) == (400, "invalid_grant")


def test_client_credentials_with_basic_auth(org: EmulatorHandle) -> None:
    org.control.config(client_id="cc-app", client_secret="cc-secret")
    good = base64.b64encode(b"cc-app:cc-secret").decode()
    status, body = _post_token(org, {"grant_type": "client_credentials"}, {"Authorization": f"Basic {good}"})
    assert status == 200 and body["access_token"].startswith("00D") and "refresh_token" not in body
    bad = base64.b64encode(b"cc-app:wrong").decode()
    status, body = _post_token(org, {"grant_type": "client_credentials"}, {"Authorization": f"Basic {bad}"})
    assert (status, body["error"]) == (400, "invalid_client")


def test_jwt_bearer_checks_signature_against_configured_certificate(org: EmulatorHandle) -> None:
    rsa = trustme.KeyType.RSA
    cert = trustme.CA(key_type=rsa).issue_cert("sfsync-app", key_type=rsa)
    other = trustme.CA(key_type=rsa).issue_cert("attacker", key_type=rsa)
    org.control.config(jwt_certificate_pem=cert.cert_chain_pems[0].bytes().decode())

    def assertion(key_pem: bytes, **claims: object) -> str:
        key = serialization.load_pem_private_key(key_pem, password=None)
        payload = {"iss": "app", "sub": org.username, "aud": "https://login.salesforce.com",
                   "exp": int(time.time()) + 3600, **claims}
        return jwt.encode(payload, key, algorithm="RS256")  # type: ignore[arg-type]

    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    status, body = _post_token(org, {"grant_type": grant, "assertion": assertion(cert.private_key_pem.bytes())})
    assert status == 200 and body["instance_url"] == org.url
    status, body = _post_token(org, {"grant_type": grant, "assertion": assertion(other.private_key_pem.bytes())})
    assert (status, body) == (400, {"error": "invalid_grant", "error_description": "invalid assertion"})
    expired = assertion(cert.private_key_pem.bytes(), exp=int(time.time()) - 10)
    status, body = _post_token(org, {"grant_type": grant, "assertion": expired})
    assert (status, body["error_description"]) == (400, "expired authorization code")


def test_unsupported_grant_type(org: EmulatorHandle) -> None:
    status, body = _post_token(org, {"grant_type": "authorization_code", "code": "x"})
    assert (status, body) == (400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"})


def test_expired_session_gets_invalid_session_id(org: EmulatorHandle, raw: Raw) -> None:
    assert raw.call("GET", "limits").status_code == 200
    assert org.control.expire_sessions(raw.token) == 1
    response = raw.call("GET", "limits")
    assert response.status_code == 401
    assert response.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def test_session_lifetime_is_configurable(org: EmulatorHandle) -> None:
    """Sessions age through the control API, not the clock: half the configured hour leaves the session live,
    one more half (plus a second) ends it; a session issued under the default two hours outlives that age."""
    org.control.config(session_lifetime_seconds=3600)
    sf = org.salesforce()
    assert sf.limits()["DailyApiRequests"]["Max"] == 1_000_000
    assert org.control.age_sessions(1800, token=sf.session_id) == {"aged": 1, "expired": 0}
    assert sf.limits()["DailyApiRequests"]["Max"] == 1_000_000
    assert org.control.age_sessions(1801, token=sf.session_id) == {"aged": 1, "expired": 1}
    with pytest.raises(SalesforceExpiredSession) as info:
        sf.limits()
    assert info.value.content == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    org.control.config(session_lifetime_seconds=7200)
    longer = org.salesforce()
    assert org.control.age_sessions(3601, token=longer.session_id) == {"aged": 1, "expired": 0}
    assert longer.limits()["DailyApiRequests"]["Max"] == 1_000_000


def test_age_sessions_control(org: EmulatorHandle) -> None:
    first = org.access_token()
    org.access_token()
    assert org.control.age_sessions(10) == {"aged": 2, "expired": 0}
    assert org.control.age_sessions(7200, token=first) == {"aged": 1, "expired": 1}
    assert org.control.expire_sessions() == 1  # only the second was still live
    assert org.control.age_sessions(1, token="00Dnope!x") == {"aged": 0, "expired": 0}
    with pytest.raises(httpx.HTTPStatusError) as info:
        org.control.age_sessions(0)
    assert info.value.response.status_code == 422
    assert info.value.response.json()["details"][0]["loc"] == ["seconds"]


def test_missing_token_is_rejected(org: EmulatorHandle) -> None:
    sf = Salesforce(instance_url=org.url, session_id="00Dbogus!token", session=org.http_session())
    with pytest.raises(SalesforceExpiredSession) as info:
        sf.query("SELECT Id FROM Account")
    assert info.value.status == 401
    assert info.value.content[0]["errorCode"] == "INVALID_SESSION_ID"
