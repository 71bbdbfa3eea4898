"""Batch planning, per-record outcomes and the error table of the Salesforce sink (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from consumers.salesforce.errors import PERMANENT_CODES, TRANSIENT_CODES, classify
from consumers.salesforce.plan import Call, Entry, UnresolvedReference, plan, record_outcome, upsert_body
from sfsync.failures import FailureKind
from sfsync.records import ApplyCommand, ApplyOperation, ApplyTarget, FieldPyValue, Source
from sfsync.salesforce.values import dumps_exact


def _cmd(key: str | None, values: dict[str, FieldPyValue] | None = None, *, obj: str = "Account",
         op: ApplyOperation = ApplyOperation.UPSERT, sfid: str | None = None) -> ApplyCommand:
    return ApplyCommand(target=ApplyTarget.SALESFORCE, object=obj, operation=op, source=Source.POSTGRES,
                        source_event_id="e", source_commit_ts=datetime.now(UTC), local_key=key, sfid=sfid,
                        values=values or {})


def ext(_obj: str) -> str:
    return "Local_Id__c"


def test_chunks_of_200_per_object_and_operation() -> None:
    batch = [_cmd(str(i)) for i in range(450)] + [_cmd(f"c{i}", obj="Contact") for i in range(3)]
    p = plan(batch, ext)
    assert [[(c.object, len(c.entries)) for c in r] for r in p.rounds] == [
        [("Account", 200), ("Account", 200), ("Account", 50), ("Contact", 3)]]
    assert p.call_count == 4 and p.failures == {}


def test_same_record_merges_and_keeps_order() -> None:
    batch = [_cmd("1", {"Name": "a"}), _cmd("1", {"Phone": "p"}), _cmd("1", op=ApplyOperation.DELETE),
             _cmd("1", {"Name": "b"}), _cmd("2", {"Name": "x"})]
    p = plan(batch, ext)
    assert len(p.rounds) == 3
    first = p.rounds[0]
    assert [(c.op, [e.indexes for e in c.entries]) for c in first] == [("upsert", [[0, 1], [4]])]
    assert first[0].entries[0].values == {"Name": "a", "Phone": "p"}
    assert [(c.op, [e.indexes for e in c.entries]) for c in p.rounds[1]] == [("delete", [[2]])]
    assert p.rounds[2][0].entries[0].values == {"Name": "b"}


def test_keys_and_missing_keys() -> None:
    p = plan([_cmd(None, sfid="001A"), _cmd(None), _cmd("k")], ext)
    assert p.failures[1].error_class == "MISSING_KEY" and p.failures[1].kind is FailureKind.PERMANENT
    assert sorted(c.key_field for c in p.rounds[0]) == ["Id", "Local_Id__c"]


def test_referenced_objects_go_first() -> None:
    p = plan([_cmd("c", obj="Contact"), _cmd("a")], ext, frozenset({"Account"}))
    assert [c.object for c in p.rounds[0]] == ["Account", "Contact"]


def test_upsert_body() -> None:
    call = Call("Contact", "upsert", "Local_Id__c", [])
    entry = Entry("Contact", "upsert", [0], "c1", None,
                  {"LastName": "L", "AccountId": "a1", "Id": "x", "Local_Id__c": "other", "Empty": None})
    ids = {("Account", "a1"): "001A"}
    body = upsert_body(call, entry, {"AccountId": "Account"}, lambda o, k: ids.get((o, k)))
    assert body == {"attributes": {"type": "Contact"}, "LastName": "L", "AccountId": "001A", "Empty": None,
                    "Local_Id__c": "c1"}
    entry.values["AccountId"] = "nope"
    with pytest.raises(UnresolvedReference):
        upsert_body(call, entry, {"AccountId": "Account"}, lambda o, k: ids.get((o, k)))


def test_record_outcomes() -> None:
    assert record_outcome({"id": "001", "success": True, "errors": []}, "upsert") is None
    failure = record_outcome({"success": False, "errors": [
        {"statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Phone is required", "fields": ["Phone"]}]},
        "upsert")
    assert failure is not None and failure.kind is FailureKind.PERMANENT
    assert failure.error_class == "FIELD_CUSTOM_VALIDATION_EXCEPTION" and "Phone is required" in failure.message
    lock = record_outcome({"success": False, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "m"}]},
                          "upsert")
    assert lock is not None and lock.kind is FailureKind.TRANSIENT
    assert record_outcome({"success": False, "errors": [{"statusCode": "ENTITY_IS_DELETED"}]}, "delete") is None
    missing = record_outcome(None, "upsert")
    assert missing is not None and missing.kind is FailureKind.TRANSIENT


def test_error_table() -> None:
    assert not TRANSIENT_CODES & PERMANENT_CODES
    for code in ("UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "TIMEOUT"):
        assert classify(code) is FailureKind.TRANSIENT
    for code in ("INVALID_FIELD", "FIELD_CUSTOM_VALIDATION_EXCEPTION", "REQUIRED_FIELD_MISSING", "STRING_TOO_LONG",
                 "DUPLICATE_VALUE", "MALFORMED_ID", "INVALID_FIELD_FOR_INSERT_UPDATE"):
        assert classify(code, 400) is FailureKind.PERMANENT
    assert classify("SOMETHING_NEW", 502) is FailureKind.TRANSIENT
    assert classify("SOMETHING_NEW", 400) is FailureKind.PERMANENT


def test_linked_record_is_written_by_id_and_gets_its_local_key() -> None:
    # A record created in Salesforce and synced down has an sfid but no Local_Id__c yet: writing it by
    # external id would create a duplicate, so it is written by Id and the body links it.
    p = plan([_cmd("7", sfid="001B")], ext)
    (call,) = p.rounds[0]
    assert call.key_field == "Id"
    body = upsert_body(call, call.entries[0], {}, lambda o, k: None, "Local_Id__c")
    assert body["Id"] == "001B" and body["Local_Id__c"] == "7"


def test_ids_are_sent_and_compared_in_their_18_character_form() -> None:
    """Failed before the fix: the 15- and 18-character forms of one id were two records to the plan (two
    entries in one call) and the 15-character form was sent as the key."""
    id15, id18 = "0018d00000003D7", "0018d00000003D7AAI"
    p = plan([_cmd(None, {"Name": "a"}, sfid=id15), _cmd(None, {"Phone": "1"}, sfid=id18),
              _cmd(None, op=ApplyOperation.DELETE, sfid=id15)], ext)
    assert [[(c.op, c.key_field, [(e.sfid, e.indexes) for e in c.entries]) for c in r] for r in p.rounds] == [
        [("upsert", "Id", [(id18, [0, 1])])], [("delete", "", [(id18, [2])])]]
    call = p.rounds[0][0]
    body = upsert_body(call, call.entries[0], {}, lambda _t, _k: None)
    assert body == {"attributes": {"type": "Account"}, "Name": "a", "Phone": "1", "Id": id18}
    # a value that is no Salesforce id is sent as it is (Salesforce answers MALFORMED_ID)
    assert plan([_cmd(None, sfid="001XX")], ext).rounds[0][0].entries[0].sfid == "001XX"


def test_decimals_stay_exact_in_the_body() -> None:
    call = Call("Account", "upsert", "Local_Id__c", [Entry("Account", "upsert", [0], "k", None, {
        "AnnualRevenue": Decimal(2**60 + 1), "Rate__c": Decimal("12345678901234567.891")})])
    body = upsert_body(call, call.entries[0], {}, lambda _t, _k: None)
    assert dumps_exact(body, sort_keys=True) == (
        '{"AnnualRevenue": 1152921504606846977, "Local_Id__c": "k", "Rate__c": 12345678901234567.891, '
        '"attributes": {"type": "Account"}}')
