"""The SOQL literal escaper: every value becomes one literal that no quote or backslash can end early."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sfsync.salesforce.soql import soql_string


def test_quotes_and_backslashes_are_escaped() -> None:
    assert soql_string("O'Brien") == "'O\\'Brien'"
    assert soql_string("a\\b") == "'a\\\\b'"
    assert soql_string("") == "''"


@given(st.text(alphabet=st.sampled_from(["a", "'", "\\", " ", "x", "%"]), max_size=20))
def test_no_value_ends_the_literal_early(value: str) -> None:
    literal = soql_string(value)
    body = literal[1:-1]
    # walking the body as SOQL does: every quote inside is escaped, so the literal ends only at its last char
    i = 0
    while i < len(body):
        if body[i] == "\\":
            i += 2
            continue
        assert body[i] != "'", literal
        i += 1
    assert i == len(body)
