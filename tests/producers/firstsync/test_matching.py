"""The first-sync matching rule, on plain data: who links, who is ambiguous, who is created."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from producers.firstsync.matching import Ambiguous, Candidate, Link, match_value, normalize, plan_first_sync


def test_key_values_compare_without_case_and_whitespace() -> None:
    assert normalize("  Ann.Lee@Example.COM \t") == normalize("ann.lee@example.com") == "ann.lee@example.com"
    assert normalize("a b@x.io") == "ab@x.io"
    assert normalize("STRASSE") == normalize("straße")  # casefold, not lower
    assert match_value(["x@y.z", " Smith "]) == ("x@y.z", "smith")
    assert match_value(["x@y.z", None]) is None and match_value(["  "]) is None and match_value([]) is None


def test_only_mutual_single_candidates_link() -> None:
    local = [Candidate("1", ("a@x.io",)), Candidate("2", (" B@x.io",)), Candidate("3", ("b@x.io",)),
             Candidate("4", ("c@x.io",)), Candidate("5", (None,))]
    remote = [Candidate("S1", ("A@X.IO",)), Candidate("S2", ("b@x.io",)), Candidate("S3", ("d@x.io",)),
              Candidate("S4", ("d@x.io",)), Candidate("S5", ("",))]
    plan = plan_first_sync(local, remote)
    assert plan.links == [Link("1", "S1", ("a@x.io",))]
    assert plan.ambiguous == [Ambiguous(("b@x.io",), ("2", "3"), ("S2",))]
    assert plan.local_only == ["4", "5"]  # no candidate, or no key value: created in Salesforce
    assert plan.salesforce_only == ["S3", "S4", "S5"]  # two Salesforce records, no local one: both created
    assert plan.counts() == {"linked": 1, "ambiguous_groups": 1, "ambiguous_local": 2, "ambiguous_salesforce": 1,
                             "local_only": 2, "salesforce_only": 3}
    text = plan.ambiguous[0].describe(["Email"])
    assert "Email='b@x.io'" in text and "[2, 3]" in text and "[S2]" in text


def test_a_key_of_several_fields_needs_every_field() -> None:
    local = [Candidate("1", ("a@x.io", "Lee")), Candidate("2", ("a@x.io", "Kim"))]
    remote = [Candidate("S1", ("a@x.io", " lee")), Candidate("S2", ("a@x.io", None))]
    plan = plan_first_sync(local, remote)
    assert plan.links == [Link("1", "S1", ("a@x.io", "lee"))]
    assert plan.local_only == ["2"] and plan.salesforce_only == ["S2"]


def test_no_match_key_creates_everything_on_the_other_side() -> None:
    plan = plan_first_sync([Candidate("1", ()), Candidate("2", ())], [Candidate("S1", ())])
    assert plan.links == [] and plan.local_only == ["1", "2"] and plan.salesforce_only == ["S1"]


def test_a_key_given_twice_on_one_side_is_refused() -> None:
    try:
        plan_first_sync([Candidate("1", ("a",)), Candidate("1", ("b",))], [])
    except ValueError as e:
        assert "'1' appears twice" in str(e)
    else:
        raise AssertionError("a duplicated key was accepted")


emails = st.sampled_from(["a@x.io", "A@x.io ", "b@x.io", " B@X.IO", "c@x.io", "", None])


@settings(max_examples=300, deadline=None)
@given(local=st.lists(emails, max_size=12), remote=st.lists(emails, max_size=12), seed=st.integers(0, 2**32))
def test_every_record_gets_exactly_one_fate_and_links_are_one_to_one(
        local: list[str | None], remote: list[str | None], seed: int) -> None:
    here = [Candidate(f"L{i}", (e,)) for i, e in enumerate(local)]
    there = [Candidate(f"S{i}", (e,)) for i, e in enumerate(remote)]
    plan = plan_first_sync(here, there)
    fates = Counter([*(x.local_key for x in plan.links), *(k for a in plan.ambiguous for k in a.local_keys),
                     *plan.local_only])
    assert fates == Counter(c.key for c in here)  # each local record once
    fates = Counter([*(x.sfid for x in plan.links), *(k for a in plan.ambiguous for k in a.sfids),
                     *plan.salesforce_only])
    assert fates == Counter(c.key for c in there)
    key_of = {c.key: match_value(c.values) for c in [*here, *there]}
    for link in plan.links:  # a link is the only candidate on both sides
        assert key_of[link.local_key] == key_of[link.sfid] is not None
        assert sum(key_of[c.key] == key_of[link.sfid] for c in [*here, *there]) == 2
    # the input order changes nothing
    rng = random.Random(seed)
    rng.shuffle(here)
    rng.shuffle(there)
    assert plan_first_sync(here, there) == plan
