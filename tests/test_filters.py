"""The record filter language and exclusion lists (sfsync/filters.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfsync.filters import Exclusions, FilterSyntaxError, Verdict, compile_filter, screen


def ev(text: str, **values: Any) -> bool | None:
    return compile_filter(text).evaluate(values)


@pytest.mark.parametrize(("text", "values", "expected"), [
    ("Email != null and not Email endswith '@example.org'", {"Email": "ada@acme.com"}, True),
    ("Email != null and not Email endswith '@example.org'", {"Email": "bob@EXAMPLE.org"}, False),
    ("Email != null and not Email endswith '@example.org'", {"Email": None}, False),
    ("not Email endswith '@example.org'", {"Email": None}, True),  # every test on null but = / != is false
    ("Email = null", {"Email": None}, True),
    ("Email is null", {"Email": ""}, False),
    ("Email is not null", {"Email": "x"}, True),
    ("Status = 'Open'", {"Status": "open"}, False),  # = is exact
    ("Status contains 'PEN'", {"Status": "open"}, True),  # text tests ignore case
    ("Status startswith 'op' AND Status ENDSWITH 'EN'", {"Status": "Open"}, True),  # keywords ignore case
    ("Status in ('Open', 'Working')", {"Status": "Working"}, True),
    ("Status not in ('Open', 'Working')", {"Status": "Closed"}, True),
    ("Status not in ('Open')", {"Status": None}, True),
    ("Status in (null, 'Open')", {"Status": None}, True),
    ("a or b and c", {"a": True, "b": False, "c": False}, True),  # and binds tighter than or
    ("(a or b) and c", {"a": True, "b": False, "c": False}, False),
    ("not a and b", {"a": False, "b": True}, True),  # not binds tightest
    ("a = true", {"a": True}, True),
    ("a != false", {"a": False}, False),
    ("n >= 1000", {"n": Decimal("1000.00")}, True),
    ("n > 10", {"n": 9.5}, False),
    ("n = 12", {"n": "12"}, True),  # numbers by value, whatever their type
    ("n = 1", {"n": True}, False),  # a boolean is no number
    ("n < 5", {"n": None}, False),
    ("n < 5", {"n": "abc"}, False),
    ("d >= '2024-01-01'", {"d": date(2024, 5, 1)}, True),
    ("d < '2024-01-01T00:00:00+00:00'", {"d": datetime(2023, 12, 31, 23, 59, tzinfo=UTC)}, True),
    ("region matches '^(EU|UK)-'", {"region": "EU-west"}, True),
    ("region matches '^(EU|UK)-'", {"region": "us-EU-"}, False),
    ("region matches '(?i)^eu'", {"region": "EU"}, True),
    ("a = b", {"a": "x", "b": "x"}, True),
    ('name = "it\\"s"', {"name": 'it"s'}, True),
    ("name = 'it\\'s'", {"name": "it's"}, True),
])
def test_conditions(text: str, values: dict[str, Any], expected: bool) -> None:
    assert ev(text, **values) is expected


def test_names_are_collected() -> None:
    assert compile_filter("Email != null and (Status in ('a') or n > 1) and not x matches 'y'").names == {
        "Email", "Status", "n", "x"}


@pytest.mark.parametrize(("text", "values", "expected"), [
    ("Email endswith '@x.org'", {}, None),  # not carried: unknown
    ("not Email endswith '@x.org'", {}, None),
    ("Email endswith '@x.org' and Status = 'Open'", {"Status": "Closed"}, False),  # false and unknown
    ("Email endswith '@x.org' or Status = 'Open'", {"Status": "Open"}, True),  # true or unknown
    ("Email endswith '@x.org' or Status = 'Open'", {"Status": "Closed"}, None),
    ("Email is null", {}, None),
    ("Email in ('a')", {}, None),
])
def test_a_name_the_values_do_not_carry_is_unknown(text: str, values: dict[str, Any], expected: bool | None) -> None:
    assert ev(text, **values) is expected


@pytest.mark.parametrize(("text", "column", "words"), [
    ("Email != ", 10, "ends too early"),
    ("Email != null and", 18, "ends too early"),
    ("Email !! null", 7, "unexpected character"),
    ("Email null", 7, "unexpected null"),
    ("and Email = 1", 1, "unexpected and"),
    ("(a = 1", 7, "expected"),
    ("a matches '('", 11, "not a regular expression"),
    ("   ", 1, "empty"),
])
def test_syntax_errors_name_the_column(text: str, column: int, words: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        compile_filter(text)
    assert caught.value.column == column, str(caught.value)
    assert words in str(caught.value) and str(caught.value).startswith(f"syntax error at column {column}: ")


def test_syntax_errors_never_echo_the_text() -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        compile_filter("Secret = 'hunter2' hunter3")
    assert "hunter" not in str(caught.value)


names = st.sampled_from(["a", "b", "c"])
atoms = st.one_of(names.map(lambda n: f"{n} = true"), names.map(lambda n: f"{n} is null"))
exprs = st.recursive(atoms, lambda inner: st.one_of(
    st.tuples(inner, inner).map(lambda t: f"({t[0]} and {t[1]})"),
    st.tuples(inner, inner).map(lambda t: f"({t[0]} or {t[1]})"),
    inner.map(lambda e: f"not {e}")), max_leaves=8)
values = st.fixed_dictionaries({}, optional={n: st.sampled_from([True, False, None]) for n in "abc"})


@given(exprs, values)
def test_kleene_logic(text: str, vals: dict[str, Any]) -> None:
    """Fully known values always decide; unknown only where a missing name could change the answer."""
    result = compile_filter(text).evaluate(vals)
    assert compile_filter(f"not ({text})").evaluate(vals) == (None if result is None else not result)
    missing = [n for n in compile_filter(text).names if n not in vals]
    if not missing:
        assert result is not None
    if result is not None:  # a decided answer holds whatever the missing names turn out to be
        for fill in (True, False, None):
            assert compile_filter(text).evaluate({**vals, **dict.fromkeys(missing, fill)}) is result


def test_exclusions_by_address_domain_and_id() -> None:
    ex = Exclusions.of(emails=["CEO@Acme.com"], domains=["@Example.ORG"], ids=["003000000000001", "42"])
    assert ex.email(" ceo@acme.COM ") == "its email address is excluded"
    assert ex.email("a@example.org") == ex.email("b@mail.example.org") == "its email domain is excluded"
    assert ex.email("a@notexample.org") is None and ex.email("a@example.org.evil") is None
    assert ex.email(None) is None and ex.email("") is None and ex.email("no-at-sign") is None
    assert ex.record("003000000000001AAA", None) == "its id is excluded"  # the 15-character id, in 18
    assert ex.record(None, "42") == "its id is excluded"
    assert ex.record("003000000000002AAA", "43") is None


def test_screen_tries_ids_then_emails_then_the_condition() -> None:
    ex = Exclusions.of(domains=["example.org"], ids=["7"])
    cond = "Status != 'Closed'"
    assert screen(cond, "to_local", ex, {"Email": "a@example.org"}, "Email", ("001", "7")) == Verdict(
        "filters.exclude_ids", "its id is excluded")
    assert screen(cond, "to_local", ex, {"Email": "a@example.org"}, "Email", (None, None)) == Verdict(
        "filters.exclude_domains", "its email domain is excluded")
    assert screen(cond, "to_local", ex, {"Status": "Closed"}, "Email", (None, None)) == Verdict(
        "filters.to_local", "it does not match filters.to_local")
    assert screen(cond, "to_local", ex, {"Email": "a@acme.com"}, "Email", (None, None)) is None  # unknown: passes
    assert screen(None, "to_local", Exclusions(), {}, None, (None, None)) is None
