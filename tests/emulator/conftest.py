"""Fixtures for the emulator tests.

The session-scoped ``emulator`` fixture comes from tests/conftest.py; these fixtures reset the org
before each test instead of starting a new server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce

from sfsync.devstack.emulator import EmulatorHandle


@pytest.fixture
def org(org: EmulatorHandle) -> EmulatorHandle:
    """The reset org (root conftest) with the default configuration knobs, whatever ran before."""
    org.control.config(session_lifetime_seconds=7200, api_limit=1_000_000, event_retention_seconds=72 * 3600,
                       client_id=None, client_secret=None, security_token="", jwt_certificate_pem=None)
    return org


@pytest.fixture
def sf(org: EmulatorHandle) -> Salesforce:
    """A simple-salesforce client logged in to the freshly reset org."""
    return org.salesforce()


@dataclass
class Raw:
    """Raw HTTPS access for asserting exact status codes, headers and error bodies."""

    base: str
    session: requests.Session
    token: str

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Call ``/services/data/v59.0/<path>`` (or an absolute path starting with '/') with the token."""
        url = self.base + (path if path.startswith("/") else f"/services/data/v59.0/{path}")
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return self.session.request(method, url, headers=headers, timeout=30, **kw)


@pytest.fixture
def raw(org: EmulatorHandle) -> Raw:
    """Raw HTTPS access with a fresh token."""
    return Raw(org.url, org.http_session(), org.access_token())
