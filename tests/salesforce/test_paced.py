"""Calls paced by the API budget (``sfsync.salesforce.paced``), with the real client against the emulator:
what is called, in what order, and what a spent budget does (raise for a command, wait for a role)."""

from __future__ import annotations

from typing import Any

import pytest

from sfsync.config import build_config
from sfsync.salesforce.paced import BudgetSpent, PacedCalls
from sfsync.salesforce.rest import SalesforceClient


def client_for(org: Any) -> SalesforceClient:
    from sfsync.devstack.emulator import PASSWORD, USERNAME

    cfg = build_config({"salesforce": {
        "login_url": org.url, "ca_bundle": str(org.ca_path),
        "auth": {"flow": "password", "client_id": "sfsync-test", "username": USERNAME, "password": PASSWORD}}})
    return SalesforceClient(cfg.salesforce)


def calls_made(org: Any) -> dict[str, int]:
    return dict(org.control.stats()["api_calls"])


def test_a_spent_budget_stops_a_command_before_its_call(org: Any) -> None:
    client = client_for(org)
    try:
        org.control.set_limits(max=1000, used=600)
        paced = PacedCalls(client, 0.5, wait=False)
        paced(lambda: client.describe("Contact"))  # usage unknown before the first answer: it goes
        org.control.reset_stats()
        with pytest.raises(BudgetSpent, match="601 of 500 allowed"):
            paced(lambda: client.describe("Contact"))
        assert calls_made(org) == {} and paced.count == 1
    finally:
        client.close()
        org.control.set_limits(used=0)


def test_a_role_waits_reads_the_usage_again_then_calls(org: Any) -> None:
    client = client_for(org)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:  # a new day: the org's usage is reset while the role waits
            org.control.set_limits(used=0)

    try:
        org.control.set_limits(max=1000, used=700)
        paced = PacedCalls(client, 0.5, wait=True, retry_s=60.0, sleep=sleep)
        query = paced.wrap(client.query_records)
        query("select Id from Contact", True)
        org.control.reset_stats()
        assert query("select Id from Contact", True) == []
        # two waits, each followed by one GET limits; then the query itself
        assert slept == [60.0, 60.0]
        assert calls_made(org) == {"GET limits": 2, "GET queryAll": 1} and paced.count == 4
    finally:
        client.close()
        org.control.set_limits(used=0)
