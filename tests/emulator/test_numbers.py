"""Number fields keep exact decimals, as Salesforce does (raw HTTPS: the JSON text is what is checked).

Salesforce stores a Number/Currency/Percent field as a decimal of at most ``precision`` digits, ``scale`` of
them after the point (rounded half up; the emulator leaves a scale-0 field's fraction as sent); a value
with more integer digits than ``precision - scale`` is refused with ``NUMBER_OUTSIDE_VALID_RANGE``. Its
JSON carries the digits as a JSON number.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sfsync.devstack.emulator import EmulatorHandle

from .conftest import Raw

#: 18 digits each: more than a binary float (about 16) keeps. AnnualRevenue is currency(18, 0),
#: Geo__Latitude__s double(18, 15).
BIG_INTEGER = 2**59 + 1
FINE_FRACTION = Decimal("123.456789012345678")


def _exact(response: Any) -> Any:
    """A response body parsed with every JSON number kept exactly (Decimal for fractions)."""
    return json.loads(response.text, parse_float=Decimal)


def _post(raw: Raw, path: str, body_text: str) -> Any:
    return raw.call("POST", path, data=body_text.encode(), headers={"Content-Type": "application/json"})


def test_number_fields_store_and_return_exact_decimals(raw: Raw, org: EmulatorHandle) -> None:
    """Failed before the fix: the emulator parsed JSON numbers as floats and stored
    Geo__Latitude__s = 123.45678901234568 (one digit lost)."""
    created = _post(raw, "sobjects/Account/",
                    f'{{"Name": "Exact", "AnnualRevenue": {BIG_INTEGER}, "Geo__Latitude__s": {FINE_FRACTION}}}')
    assert created.status_code == 201, created.text
    sfid = created.json()["id"]
    record = _exact(raw.call("GET", f"sobjects/Account/{sfid}"))
    assert record["AnnualRevenue"] == BIG_INTEGER
    assert record["Geo__Latitude__s"] == FINE_FRACTION
    assert f'"Geo__Latitude__s":{FINE_FRACTION}' in raw.call("GET", f"sobjects/Account/{sfid}").text
    rows = _exact(raw.call("GET", "query/", params={
        "q": f"SELECT Id, AnnualRevenue FROM Account WHERE Geo__Latitude__s = {FINE_FRACTION}"}))["records"]
    assert [(r["Id"], r["AnnualRevenue"]) for r in rows] == [(sfid, BIG_INTEGER)]
    # the CDC event of the create carries the same digits
    events = _exact(raw.call("GET", "/__emulator/events"))["events"]
    payload = next(e["payload"] for e in events if e["payload"]["ChangeEventHeader"]["recordIds"] == [sfid])
    assert payload["AnnualRevenue"] == BIG_INTEGER and payload["Geo__c"]["Latitude"] == FINE_FRACTION


def test_number_fields_round_half_up_to_their_scale(raw: Raw) -> None:
    """Failed before the fix: rounding went through a binary float (``round(float, 15)``), which turned
    1.0000000000000005 into 1.0 instead of rounding it half up."""
    created = _post(raw, "sobjects/Account/", '{"Name": "Round", "Geo__Latitude__s": 1.0000000000000005}')
    assert created.status_code == 201, created.text
    record = _exact(raw.call("GET", f"sobjects/Account/{created.json()['id']}"))
    assert record["Geo__Latitude__s"] == Decimal("1.000000000000001")


def test_a_number_with_too_many_digits_is_refused(raw: Raw) -> None:
    """Failed before the fix: 2**60 + 1 (19 digits) was accepted into a currency(18, 0) field and stored as
    a float, 1152921504606846976 — a silently different number."""
    refused = _post(raw, "sobjects/Account/", f'{{"Name": "Huge", "AnnualRevenue": {2**60 + 1}}}')
    assert refused.status_code == 400
    (error,) = refused.json()
    assert error["errorCode"] == "NUMBER_OUTSIDE_VALID_RANGE" and error["fields"] == ["AnnualRevenue"]
    # the largest value the field holds is fine
    assert _post(raw, "sobjects/Account/", f'{{"Name": "Max", "AnnualRevenue": {10**18 - 1}}}').status_code == 201
