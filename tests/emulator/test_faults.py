"""Fault injection, stats and control endpoints."""

from __future__ import annotations

import time

import httpx
import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceGeneralError, SalesforceMalformedRequest

from sfsync.devstack.emulator import EmulatorHandle

from .conftest import Raw


def test_error_fault_with_count(org: EmulatorHandle, sf: Salesforce) -> None:
    rule = org.control.add_fault(method="POST", path=r"/sobjects/Account/?$", status=503,
                                 error_code="SERVER_UNAVAILABLE", message="try later", count=2)
    for _ in range(2):
        with pytest.raises(SalesforceGeneralError) as info:
            sf.Account.create({"Name": "x"})
        assert info.value.status == 503
        assert info.value.content == [{"message": "try later", "errorCode": "SERVER_UNAVAILABLE", "fields": []}]
    assert sf.Account.create({"Name": "third"})["success"] is True
    assert org.control.faults() == [{**rule, "fired": 2}]


def test_unable_to_lock_row_on_one_sobject(org: EmulatorHandle, sf: Salesforce) -> None:
    org.control.add_fault(sobject="Contact", error_code="UNABLE_TO_LOCK_ROW")
    assert sf.Account.create({"Name": "unaffected"})["success"] is True
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Contact.create({"LastName": "locked"})
    assert info.value.content == [{"message": "unable to obtain exclusive access to this record or 1 records",
                                   "errorCode": "UNABLE_TO_LOCK_ROW", "fields": []}]
    org.control.clear_faults()
    assert sf.Contact.create({"LastName": "free"})["success"] is True


def test_latency_fault(org: EmulatorHandle, sf: Salesforce) -> None:
    org.control.reset_stats()
    rule = org.control.add_fault(path="/limits", latency_ms=300, count=1)
    start = time.perf_counter()
    assert sf.limits()["DailyApiRequests"]["Max"] > 0
    # a lower bound only: the server sleeps 300 ms before answering, so no load makes this shorter
    assert time.perf_counter() - start >= 0.3
    assert sf.limits()["DailyApiRequests"]["Max"] > 0
    # the second call went through undelayed: the rule fired once (count=1), nothing else was injected
    assert org.control.faults() == [{**rule, "fired": 1}]
    stats = org.control.stats()
    assert stats["faults_injected"] == 1 and stats["api_calls"] == {"GET limits": 2}


def test_dropped_connection(org: EmulatorHandle, raw: Raw) -> None:
    org.control.add_fault(method="GET", path="/limits", drop_connection=True, count=1)
    with pytest.raises(requests.ConnectionError):
        raw.call("GET", "limits")
    assert raw.call("GET", "limits").json()["DailyApiRequests"]["Max"] > 0
    assert org.control.stats()["faults_injected"] == 1


def test_probability_zero_never_fires(org: EmulatorHandle, sf: Salesforce) -> None:
    org.control.add_fault(status=500, probability=0.0)
    assert all(sf.Account.create({"Name": f"n{i}"})["success"] for i in range(5))


def test_fault_rule_validation(org: EmulatorHandle) -> None:
    with pytest.raises(httpx.HTTPStatusError) as info:
        org.control.add_fault(status=99)
    assert info.value.response.status_code == 422
    assert info.value.response.json()["details"][0]["loc"] == ["status"]


def test_stats_per_endpoint_and_control_calls_not_counted(org: EmulatorHandle, sf: Salesforce) -> None:
    org.control.reset_stats()
    record_id = sf.Account.create({"Name": "s"})["id"]
    sf.Account.get(record_id)
    sf.Account.get(record_id)
    sf.query("SELECT Id FROM Account")
    org.control.health()
    stats = org.control.stats()
    assert stats["api_calls"] == {"POST sobjects/{type}": 1, "GET sobjects/{type}/{id}": 2, "GET query": 1}
    assert stats["api_calls_total"] == 4 and stats["events_emitted"] == 1


def test_seed_without_events(org: EmulatorHandle, sf: Salesforce) -> None:
    """Seeding is one control call, not API calls, and emits nothing (its speed: bench/emulator.py)."""
    ids = org.control.seed("Contact", 2000, {"LastName": "Seed {i}", "Local_Id__c": "s{i}"}, emit_events=False)
    assert len(ids) == len(set(ids)) == 2000 and all(i.startswith("003") for i in ids)
    stats = org.control.stats()
    assert stats["events_emitted"] == 0 and stats["api_calls_total"] == 0
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 2000
    assert sf.Contact.get_by_custom_id("Local_Id__c", "s1999")["LastName"] == "Seed 1999"
    with pytest.raises(httpx.HTTPStatusError) as info:
        org.control.seed("Contact", 1, {"Bogus": 1})
    assert info.value.response.json() == {"error": "INVALID_FIELD",
                                          "message": "No such column 'Bogus' on sobject of type Contact"}


def test_reset_wipes_records_and_events(org: EmulatorHandle, sf: Salesforce) -> None:
    sf.Account.create({"Name": "before"})
    last = org.control.events()["last_replay_id"]
    org.control.reset()
    sf = org.salesforce()
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 0
    after = org.control.events()
    assert after["events"] == [] and after["last_replay_id"] == last


def test_config_rejects_unknown_keys(org: EmulatorHandle) -> None:
    with pytest.raises(httpx.HTTPStatusError) as info:
        org.control.config(no_such_knob=1)
    assert info.value.response.json() == {"error": "unknown config key 'no_such_knob'", "details": []}
    assert org.control.config(connect_timeout_ms=15000)["connect_timeout_ms"] == 15000
    org.control.config(connect_timeout_ms=20000)
