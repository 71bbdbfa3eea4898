"""Streaming API / CDC through the unmodified aiosfstream-ng client."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from aiosfstream_ng import Client, ReplayMarker
from aiosfstream_ng.exceptions import ServerError
from simple_salesforce import Salesforce

from sfsync.devstack.emulator import EmulatorHandle, streaming_client

ACCOUNTS = "/data/AccountChangeEvent"
ALL = "/data/ChangeEvents"
#: Hang guard for one expected message, far beyond any delivery time: a missing event fails here instead of
#: at the suite's timeout. Delivery latency is a figure of bench/emulator.py, not a test.
RECEIVE_TIMEOUT = 60.0


async def _receive_one(client: Client) -> dict[str, Any]:
    return await asyncio.wait_for(client.receive(), RECEIVE_TIMEOUT)


async def _receive(client: Client, count: int) -> list[dict[str, Any]]:
    return [await _receive_one(client) for _ in range(count)]


async def _subscribed(org: EmulatorHandle, channel: str, replay: Any = -1) -> Client:
    client = streaming_client(org, replay=replay)
    await client.open()
    await client.subscribe(channel)
    return client


def _header(message: dict[str, Any]) -> dict[str, Any]:
    return message["data"]["payload"]["ChangeEventHeader"]


async def test_each_rest_change_reaches_subscriber_in_order(org: EmulatorHandle, sf: Salesforce) -> None:
    record_id = sf.Account.create({"Name": "Fast"})["id"]
    client = await _subscribed(org, ACCOUNTS)
    try:
        messages = []
        for n in range(5):  # one update, then its event, five times over
            await asyncio.to_thread(sf.Account.update, record_id, {"Phone": str(n)})
            messages.append(await _receive_one(client))
    finally:
        await client.close()
    assert [m["data"]["payload"]["Phone"] for m in messages] == ["0", "1", "2", "3", "4"]
    assert all(_header(m)["changeType"] == "UPDATE" and _header(m)["recordIds"] == [record_id] for m in messages)
    replay_ids = [m["data"]["event"]["replayId"] for m in messages]
    assert replay_ids == sorted(set(replay_ids))
    assert org.control.stats()["events_emitted"] == 6  # the create (before subscribing) and the five updates


async def test_event_shapes_for_each_change_type(org: EmulatorHandle, sf: Salesforce) -> None:
    client = await _subscribed(org, ALL)
    try:
        headers = {"Sforce-Call-Options": "client=sfsync-test"}
        account = await asyncio.to_thread(sf.Account.create, {"Name": "Acme", "BillingCity": "Paris"}, headers)
        record_id = account["id"]
        await asyncio.to_thread(sf.Account.update, record_id, {"Name": "Acme 2", "BillingCity": None})
        await asyncio.to_thread(sf.Account.delete, record_id)
        await asyncio.to_thread(org.control.undelete, [record_id])
        create, update, delete, undelete = await _receive(client, 4)
    finally:
        await client.close()
    assert create["channel"] == ALL and isinstance(create["data"]["event"]["replayId"], int)
    header = _header(create)
    assert header["changeType"] == "CREATE" and header["entityName"] == "Account"
    assert header["recordIds"] == [record_id]
    assert header["changeOrigin"] == "com/salesforce/api/rest/59.0;client=sfsync-test"
    assert header["commitUser"].startswith("005") and isinstance(header["commitTimestamp"], int)
    assert header["sequenceNumber"] == 1 and header["changedFields"] == []
    body = create["data"]["payload"]
    assert body["Name"] == "Acme" and body["BillingAddress"] == {"City": "Paris"}
    assert body["CreatedDate"].endswith(".000Z") and "IsDeleted" not in body and "SystemModstamp" not in body
    upd = update["data"]["payload"]
    assert _header(update)["changeType"] == "UPDATE"
    assert _header(update)["changeOrigin"] == "com/salesforce/api/rest/59.0"
    assert _header(update)["changedFields"] == ["Name", "BillingAddress.City", "LastModifiedDate"]
    assert _header(update)["nulledFields"] == ["BillingAddress.City"]
    assert {k: v for k, v in upd.items() if k not in ("ChangeEventHeader", "LastModifiedDate")} == {
        "Name": "Acme 2", "BillingAddress": {"City": None}}
    assert _header(delete)["changeType"] == "DELETE" and set(delete["data"]["payload"]) == {"ChangeEventHeader"}
    assert _header(undelete)["changeType"] == "UNDELETE" and undelete["data"]["payload"]["Name"] == "Acme 2"
    replay_ids = [m["data"]["event"]["replayId"] for m in (create, update, delete, undelete)]
    assert replay_ids == sorted(replay_ids) and len(set(replay_ids)) == 4


async def test_collection_is_one_transaction(org: EmulatorHandle, sf: Salesforce) -> None:
    client = await _subscribed(org, "/data/ContactChangeEvent")
    try:
        records = [{"attributes": {"type": "Contact"}, "LastName": f"T{i}", "FirstName": "F"} for i in range(3)]
        await asyncio.to_thread(sf.restful, "composite/sobjects", method="POST", json={"records": records})
        events = await _receive(client, 3)
    finally:
        await client.close()
    headers = [_header(e) for e in events]
    assert len({h["transactionKey"] for h in headers}) == 1
    assert [h["sequenceNumber"] for h in headers] == [1, 2, 3]
    assert len({h["commitNumber"] for h in headers}) == 1
    assert events[0]["data"]["payload"]["Name"] == {"FirstName": "F", "LastName": "T0"}


async def test_resubscribe_with_stored_replay_id_gets_exactly_missed_events(
        org: EmulatorHandle, sf: Salesforce) -> None:
    storage: dict[str, ReplayMarker] = {}
    client = await _subscribed(org, ACCOUNTS, replay=storage)
    ids = [r["id"] for r in await asyncio.to_thread(
        sf.restful, "composite/sobjects", method="POST",
        json={"records": [{"attributes": {"type": "Account"}, "Name": f"A{i}"} for i in range(3)]})]
    seen = [_header(m)["recordIds"][0] for m in await _receive(client, 3)]
    await client.close()
    assert seen == ids and storage[ACCOUNTS].replay_id > 0
    missed = [(await asyncio.to_thread(sf.Account.create, {"Name": f"M{i}"}))["id"] for i in range(4)]
    client = await _subscribed(org, ACCOUNTS, replay=storage)
    try:
        replayed = [_header(m)["recordIds"][0] for m in await _receive(client, 4)]
        assert replayed == missed
        live = (await asyncio.to_thread(sf.Account.create, {"Name": "live"}))["id"]
        assert _header(await _receive_one(client))["recordIds"] == [live]
    finally:
        await client.close()


async def test_replay_all_retained_events(org: EmulatorHandle, sf: Salesforce) -> None:
    ids = [(await asyncio.to_thread(sf.Lead.create, {"LastName": f"L{i}", "Company": "C"}))["id"] for i in range(2)]
    await asyncio.to_thread(sf.Account.create, {"Name": "other channel"})
    client = await _subscribed(org, "/data/LeadChangeEvent", replay=-2)
    try:
        events = await _receive(client, 2)
    finally:
        await client.close()
    assert [_header(e)["recordIds"][0] for e in events] == ids
    assert all(e["channel"] == "/data/LeadChangeEvent" for e in events)


async def test_replay_id_outside_retention_is_refused(org: EmulatorHandle, sf: Salesforce) -> None:
    first = (await asyncio.to_thread(sf.Account.create, {"Name": "old"}))["id"]
    await asyncio.to_thread(sf.Account.update, first, {"Name": "older"})
    events = org.control.events()["events"]
    org.control.truncate_events(events[-1]["replay_id"])
    stale = {ACCOUNTS: ReplayMarker(date="1", replay_id=events[0]["replay_id"])}
    client = streaming_client(org, replay=stale)
    await client.open()
    try:
        with pytest.raises(ServerError) as info:
            await client.subscribe(ACCOUNTS)
        assert info.value.response["error"] == (
            f"400::The replayId {{{events[0]['replay_id']}}} you provided was invalid.  Please provide a valid "
            "ID, -2 to replay all events, or -1 to replay only new events.")
    finally:
        await client.close()


async def test_unknown_channel_is_refused(org: EmulatorHandle) -> None:
    client = streaming_client(org)
    await client.open()
    try:
        with pytest.raises(ServerError) as info:
            await client.subscribe("/data/WidgetChangeEvent")
        assert info.value.response["error"] == "404::Unknown channel /data/WidgetChangeEvent"
        assert info.value.response["successful"] is False
    finally:
        await client.close()


async def test_gap_events(org: EmulatorHandle, sf: Salesforce) -> None:
    record_id = sf.Contact.create({"LastName": "G"})["id"]
    client = await _subscribed(org, "/data/ContactChangeEvent")
    try:
        await asyncio.to_thread(org.control.emit_gap, "Contact", "GAP_UPDATE", [record_id])
        await asyncio.to_thread(org.control.emit_gap, "Contact", "GAP_OVERFLOW")
        gap, overflow = await _receive(client, 2)
    finally:
        await client.close()
    assert _header(gap)["changeType"] == "GAP_UPDATE" and _header(gap)["recordIds"] == [record_id]
    assert set(gap["data"]["payload"]) == {"ChangeEventHeader"}
    assert _header(overflow)["changeType"] == "GAP_OVERFLOW" and _header(overflow)["recordIds"] == []
    assert _header(overflow)["entityName"] == "Contact"


async def test_raw_event_is_delivered_exactly_as_given(org: EmulatorHandle, sf: Salesforce) -> None:
    """``POST /events/raw``: a subscriber receives the given payload unchanged, with the next replay id, on the
    object's channel and on ``/data/ChangeEvents``; an unknown channel is refused with 422."""
    bad = {"ChangeEventHeader": {"entityName": "Account", "changeType": "UPDATE", "recordIds": [""]},
           "Name": ["not", "a", "name"]}
    own = await _subscribed(org, ACCOUNTS)
    every = await _subscribed(org, ALL)
    try:
        replay_id = await asyncio.to_thread(org.control.emit_raw_event, ACCOUNTS, bad)
        await asyncio.to_thread(sf.Account.create, {"Name": "After"})
        got, after = await _receive(own, 2)
        (seen_by_all, _) = await _receive(every, 2)
    finally:
        await own.close()
        await every.close()
    assert got["channel"] == ACCOUNTS and got["data"]["payload"] == bad
    assert got["data"]["event"]["replayId"] == replay_id
    assert after["data"]["event"]["replayId"] == replay_id + 1 and after["data"]["payload"]["Name"] == "After"
    assert seen_by_all["channel"] == ALL and seen_by_all["data"]["payload"] == bad
    assert org.control.events(after=replay_id - 1)["events"][0]["payload"] == bad
    with pytest.raises(httpx.HTTPStatusError) as info:
        org.control.emit_raw_event("/data/WidgetChangeEvent", bad)
    assert info.value.response.status_code == 422 and "WidgetChangeEvent" in info.value.response.json()["error"]


async def test_expired_session_is_renewed_transparently(org: EmulatorHandle, sf: Salesforce) -> None:
    """No pause after the expiry: the stored replay id makes the client's re-subscription (whenever it
    happens) resume after the last event it got, so every event arrives exactly once, in order."""
    storage: dict[str, ReplayMarker] = {}
    client = await _subscribed(org, ACCOUNTS, replay=storage)
    try:
        before = (await asyncio.to_thread(sf.Account.create, {"Name": "before expiry"}))["id"]
        received = [await _receive_one(client)]
        tokens = org.control.stats()["other_calls"]["POST oauth2/token"]
        assert await asyncio.to_thread(org.control.expire_sessions) == 2  # the streaming client's and sf's
        sf = org.salesforce()
        after = []
        for name in ("after expiry", "after renewal"):
            after.append((await asyncio.to_thread(sf.Account.create, {"Name": name}))["id"])
            received.append(await _receive_one(client))
        tokens_after = org.control.stats()["other_calls"]["POST oauth2/token"]
    finally:
        await client.close()
    assert [_header(m)["recordIds"][0] for m in received] == [before, *after]
    # the last event was created after the one before it was delivered, so a later long poll carried it: one
    # on a session the streaming client got after the expiry (sf's new token is the other new one)
    assert tokens_after >= tokens + 2


async def test_unsubscribe_stops_delivery(org: EmulatorHandle, sf: Salesforce) -> None:
    client = streaming_client(org)
    await client.open()
    await client.subscribe(ACCOUNTS)
    await client.subscribe("/data/CaseChangeEvent")
    try:
        await client.unsubscribe(ACCOUNTS)
        await asyncio.to_thread(sf.Account.create, {"Name": "ignored"})
        case_id = (await asyncio.to_thread(sf.Case.create, {"Subject": "seen"}))["id"]
        message = await _receive_one(client)
        assert message["channel"] == "/data/CaseChangeEvent" and _header(message)["recordIds"] == [case_id]
    finally:
        await client.close()
