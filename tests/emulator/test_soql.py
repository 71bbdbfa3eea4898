"""SOQL subset through sf.query / query_all / query_more, with Salesforce's error shapes."""

from __future__ import annotations

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sfsync.devstack.emulator import EmulatorHandle

from .conftest import Raw


@pytest.fixture
def people(sf: Salesforce) -> dict[str, str]:
    acme = sf.Account.create({"Name": "Acme", "Industry": "Retail", "NumberOfEmployees": 50})["id"]
    globex = sf.Account.create({"Name": "Globex", "Industry": "Energy", "NumberOfEmployees": 5})["id"]
    ids = {"acme": acme, "globex": globex}
    for key, first, last, account, email in [
        ("ann", "Ann", "Archer", acme, "ann@acme.com"),
        ("bob", "Bob", "Baker", acme, None),
        ("cat", "Cat", "Carter", globex, "cat@globex.com"),
        ("dan", None, "Dunn", None, "DAN@nowhere.org"),
    ]:
        ids[key] = sf.Contact.create({"FirstName": first, "LastName": last, "AccountId": account,
                                      "Email": email})["id"]
    return ids


def _names(result: dict) -> list[str]:
    return [row["LastName"] for row in result["records"]]


def test_select_with_parent_fields(sf: Salesforce, people: dict[str, str]) -> None:
    result = sf.query("SELECT Id, Name, Account.Name, Owner.Username FROM Contact WHERE LastName = 'Archer'")
    assert result["totalSize"] == 1 and result["done"] is True
    row = result["records"][0]
    assert row["Name"] == "Ann Archer"
    assert row["Account"] == {"attributes": {"type": "Account",
                                             "url": f"/services/data/v59.0/sobjects/Account/{people['acme']}"},
                              "Name": "Acme"}
    assert row["Owner"]["Username"] == "admin@example.com"
    orphan = sf.query("SELECT Account.Name FROM Contact WHERE LastName = 'Dunn'")["records"][0]
    assert orphan["Account"] is None


def test_where_operators(sf: Salesforce, people: dict[str, str]) -> None:
    q = "SELECT LastName FROM Contact WHERE {} ORDER BY LastName"
    assert _names(sf.query(q.format("Email = null"))) == ["Baker"]
    assert _names(sf.query(q.format("Email != null AND Account.Industry = 'retail'"))) == ["Archer"]
    assert _names(sf.query(q.format("email LIKE '%.COM'"))) == ["Archer", "Carter"]
    assert _names(sf.query(q.format("LastName IN ('Baker', 'dunn')"))) == ["Baker", "Dunn"]
    assert _names(sf.query(q.format("LastName NOT IN ('Baker', 'Dunn')"))) == ["Archer", "Carter"]
    assert _names(sf.query(q.format("NOT (LastName < 'C') OR (FirstName = 'Ann' AND Email != null)"))) == [
        "Archer", "Carter", "Dunn"]
    assert _names(sf.query(q.format(f"AccountId = '{people['globex'][:15]}'"))) == ["Carter"]
    assert _names(sf.query(q.format("CreatedDate = TODAY AND CreatedDate > 2020-01-01T00:00:00Z"))) == [
        "Archer", "Baker", "Carter", "Dunn"]
    assert _names(sf.query(q.format("CreatedDate < LAST_N_DAYS:2 OR HasOptedOutOfEmail = true"))) == []
    accounts = sf.query("SELECT Name FROM Account WHERE NumberOfEmployees >= 10 AND Industry != null")
    assert [r["Name"] for r in accounts["records"]] == ["Acme"]


def test_order_by_nulls_limit_offset(sf: Salesforce, people: dict[str, str]) -> None:
    first_names = sf.query("SELECT FirstName FROM Contact ORDER BY FirstName DESC NULLS FIRST LIMIT 3 OFFSET 1")
    assert [r["FirstName"] for r in first_names["records"]] == ["Cat", "Bob", "Ann"]
    asc = sf.query("SELECT FirstName FROM Contact ORDER BY FirstName ASC NULLS LAST")
    assert [r["FirstName"] for r in asc["records"]] == ["Ann", "Bob", "Cat", None]
    multi = sf.query("SELECT LastName FROM Contact ORDER BY Account.Name DESC, LastName ASC")
    assert _names(multi) == ["Carter", "Archer", "Baker", "Dunn"]


def test_count_queries(sf: Salesforce, people: dict[str, str]) -> None:
    assert sf.query("SELECT COUNT() FROM Contact WHERE Email != null") == {
        "totalSize": 3, "done": True, "records": []}
    agg = sf.query("SELECT COUNT(Email) emails FROM Contact")
    assert agg["records"] == [{"attributes": {"type": "AggregateResult"}, "emails": 3}]


def test_query_more_paging_with_batch_size(org: EmulatorHandle, sf: Salesforce, raw: Raw) -> None:
    org.control.seed("Account", 450, {"Name": "Seed {i}"}, emit_events=False)
    page = raw.call("GET", "query", params={"q": "SELECT Id, Name FROM Account"},
                    headers={"Sforce-Query-Options": "batchSize=200"}).json()
    assert (page["totalSize"], page["done"], len(page["records"])) == (450, False, 200)
    assert page["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    second = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
    assert (second["done"], len(second["records"])) == (False, 200)
    names = [r["Name"] for r in sf.query_all("SELECT Name FROM Account")["records"]]
    assert len(names) == 450 and names[0] == "Seed 0" and names[-1] == "Seed 449"
    gone = raw.call("GET", "query/01gdoesnotexist-200")
    assert gone.status_code == 400 and gone.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_query_all_includes_deleted(sf: Salesforce) -> None:
    kept = sf.Account.create({"Name": "Kept"})["id"]
    gone = sf.Account.create({"Name": "Gone"})["id"]
    sf.Account.delete(gone)
    live = sf.query("SELECT Id FROM Account")
    assert [r["Id"] for r in live["records"]] == [kept]
    every = sf.query_all("SELECT Id, IsDeleted FROM Account ORDER BY Name", include_deleted=True)
    assert [(r["Id"], r["IsDeleted"]) for r in every["records"]] == [(gone, True), (kept, False)]


@pytest.mark.parametrize(("soql", "code", "tail"), [
    ("SELECT Id FROMM Account", "MALFORMED_QUERY", "ERROR at Row:1:Column:11\nunexpected token: 'FROMM'"),
    ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY", "unexpected token: <EOF>"),
    ("SELECT Foo FROM Account", "INVALID_FIELD", "No such column 'Foo' on entity 'Account'."),
    ("SELECT Id FROM Widget", "INVALID_TYPE", "sObject type 'Widget' is not supported."),
    ("SELECT Boss.Name FROM Contact", "INVALID_FIELD", "Didn't understand relationship 'Boss' in field path."),
    ("SELECT Id FROM Account WHERE NumberOfEmployees = 'ten'", "INVALID_QUERY_FILTER_OPERATOR",
     "must be of type int"),
])
def test_query_errors(sf: Salesforce, soql: str, code: str, tail: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query(soql)
    error = info.value.content[0]
    assert error["errorCode"] == code
    assert error["message"].startswith(f"\n{soql}\n")
    assert tail in error["message"]
