"""Record filters: a small condition language over one record's values, plus exclusion lists. Pure, no I/O.

Why: not every record should sync (test accounts, internal domains, one customer's contacts). One language
serves both directions: inbound conditions name Salesforce fields (``Email``), outbound ones local columns
(``email``)::

    Email != null and not Email endswith '@example.org'
    Status in ('Open', 'Working') or (Priority = 'High' and IsEscalated = true)
    amount >= 1000 and region matches '^(EU|UK)'

Grammar (keywords are case-insensitive; parsed by lark, as the emulator's SOQL is):

- ``or``, ``and``, ``not`` and parentheses, in that order of binding (``not`` binds tightest);
- comparisons ``=`` (or ``==``), ``!=`` (or ``<>``), ``<``, ``<=``, ``>``, ``>=`` between a name and a
  literal (or two names); literals are ``'text'`` / ``"text"`` (backslash escapes), numbers, ``true``,
  ``false``, ``null``;
- ``x is null``, ``x is not null`` (the same as ``x = null`` / ``x != null``);
- text tests ``contains``, ``startswith``, ``endswith`` ignore case (as SOQL's ``LIKE``); ``matches`` is a
  Python regular expression searched in the text (case-sensitive unless it says ``(?i)``);
- ``x in ('a', 'b')`` and ``x not in (...)``;
- a name alone tests a boolean: ``IsActive and not HasOptedOutOfEmail`` (only ``true`` is true).

Semantics, as a contract:

- ``=``/``!=`` compare exactly (text case-sensitive); numbers compare by value whatever their type
  (``1 = 1.0``, ``'12' = 12``); dates and datetimes compare with ISO text literals.
- A null value: ``x = null`` is true, ``x != null`` false, and every other test on it is false (so
  ``not Email endswith '@x.org'`` is true for a record without an email).
- A name the values do not carry (a Salesforce update event carries only the fields it changed) is
  *unknown*; unknown spreads through tests and ``not`` and is resolved by Kleene logic (``false and
  unknown`` is false, ``true or unknown`` true). :meth:`Filter.evaluate` answers ``True``, ``False`` or
  ``None`` (unknown); the caller decides what unknown means (the processor lets the change through: see
  :func:`screen`).
- Compilation errors are :class:`FilterSyntaxError` with the 1-based column; messages never echo values.

Exclusion lists (:class:`Exclusions`): email addresses (any case), domains (the domain and every subdomain:
``example.org`` excludes ``a@example.org`` and ``b@mail.example.org``), and ids (a Salesforce id in its 15-
or 18-character form, or a local key). :func:`screen` combines them with a condition into one verdict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from lark import Lark, Token, Tree, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from sfsync.salesforce.values import canonical_sfid

GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (_OR and_expr)*  -> or_
?and_expr: not_expr (_AND not_expr)* -> and_
?not_expr: _NOT not_expr -> not_
         | atom
?atom: "(" or_expr ")"
     | operand OP operand -> compare
     | operand TEXT_OP operand -> text_test
     | operand _MATCHES STRING -> matches
     | operand _IS _NULL -> is_null
     | operand _IS _NOT _NULL -> is_not_null
     | operand _IN "(" literal ("," literal)* ")" -> in_
     | operand _NOT _IN "(" literal ("," literal)* ")" -> not_in
     | NAME -> truthy
?operand: NAME -> name
        | literal
literal: STRING -> string
       | NUMBER -> number
       | _NULL -> null
       | _TRUE -> true
       | _FALSE -> false

_AND.2: /and\b/i
_OR.2: /or\b/i
_NOT.2: /not\b/i
_IN.2: /in\b/i
_IS.2: /is\b/i
_NULL.2: /null\b/i
_TRUE.2: /true\b/i
_FALSE.2: /false\b/i
_MATCHES.2: /matches\b/i
TEXT_OP.2: /(contains|startswith|endswith)\b/i
NUMBER: /-?\d+(\.\d+)?/
STRING: /'(\\.|[^'\\])*'/ | /"(\\.|[^"\\])*"/
OP: "==" | "=" | "!=" | "<>" | "<=" | ">=" | "<" | ">"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
%import common.WS
%ignore WS
"""

# the basic lexer: a keyword is a keyword wherever it stands (no field may be called ``and``)
_PARSER = Lark(GRAMMAR, parser="lalr", lexer="basic", propagate_positions=True)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "'": "'", '"': '"', "\\": "\\"}
_EXPECTED = {
    "NAME": "a field or column name", "STRING": "a text literal", "NUMBER": "a number", "OP": "a comparison",
    "TEXT_OP": "contains/startswith/endswith", "LPAR": "'('", "RPAR": "')'", "COMMA": "','",
    "_AND": "and", "_OR": "or", "_NOT": "not", "_IN": "in", "_IS": "is", "_NULL": "null", "_MATCHES": "matches",
    "_TRUE": "true", "_FALSE": "false",
}

#: a value the record does not carry (see module docstring)
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()

Values = Mapping[str, Any]
Truth = bool | None
_Eval = Callable[[Values], Truth]
_Get = Callable[[Values], Any]


class FilterSyntaxError(ValueError):
    """A condition that does not parse; ``column`` is 1-based."""

    def __init__(self, column: int, reason: str) -> None:
        self.column = column
        self.reason = reason
        super().__init__(f"syntax error at column {column}: {reason}")


@dataclass(frozen=True, slots=True)
class Filter:
    """A compiled condition. ``names``: every field or column it reads."""

    text: str
    names: frozenset[str]
    _test: _Eval

    def evaluate(self, values: Values) -> Truth:
        """``True`` (the record matches), ``False``, or ``None`` when a name it needs is not in ``values``."""
        return self._test(values)


@lru_cache(maxsize=1024)
def compile_filter(text: str) -> Filter:
    """Parse and compile ``text`` (cached: the processor calls this per record)."""
    tree = _parse(text)
    names: set[str] = set()
    test = _Compiler(text, names).predicate(tree)
    return Filter(text, frozenset(names), test)


def _parse(text: str) -> Tree:
    if not text.strip():
        raise FilterSyntaxError(1, "the condition is empty")
    try:
        return _PARSER.parse(text)
    except UnexpectedEOF:
        raise FilterSyntaxError(len(text) + 1, "the condition ends too early") from None
    except UnexpectedToken as exc:
        if exc.token.type == "$END":
            raise FilterSyntaxError(len(text) + 1, "the condition ends too early" + _expected(exc.expected)) from None
        raise FilterSyntaxError(exc.column, "unexpected " + _describe(exc.token) + _expected(exc.expected)) from None
    except UnexpectedCharacters as exc:
        raise FilterSyntaxError(exc.column, "unexpected character" + _expected(exc.allowed or set())) from None
    except UnexpectedInput as exc:  # pragma: no cover - other lark input errors
        raise FilterSyntaxError(getattr(exc, "column", 1) or 1, "not a condition") from None


def _describe(token: Token) -> str:
    return _EXPECTED.get(token.type, "token")


def _expected(expected: Iterable[str]) -> str:
    shown = sorted({_EXPECTED[e] for e in expected if e in _EXPECTED})
    return f"; expected {' or '.join(shown)}" if shown else ""


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


class _Compiler:
    def __init__(self, text: str, names: set[str]) -> None:
        self.text = text
        self.names = names

    def predicate(self, node: Tree | Token) -> _Eval:
        if not isinstance(node, Tree):  # pragma: no cover - the grammar never yields a bare token here
            raise FilterSyntaxError(1, "not a condition")
        kind = node.data
        if kind == "or_":
            parts = [self.predicate(c) for c in node.children]
            return lambda v: _or(p(v) for p in parts)
        if kind == "and_":
            parts = [self.predicate(c) for c in node.children]
            return lambda v: _and(p(v) for p in parts)
        if kind == "not_":
            inner = self.predicate(node.children[0])
            return lambda v: _not(inner(v))
        if kind == "compare":
            left, op, right = node.children
            return self._compare(self.operand(left), str(op), self.operand(right))
        if kind == "text_test":
            left, op, right = node.children
            return self._text_test(self.operand(left), str(op).lower(), self.operand(right))
        if kind == "matches":
            left, pattern = node.children
            assert isinstance(pattern, Token)
            return self._matches(self.operand(left), pattern)
        if kind in ("is_null", "is_not_null"):
            get = self.operand(node.children[0])
            want = kind == "is_null"
            return lambda v: _known(get(v), lambda x: (x is None) == want)
        if kind == "truthy":
            name = str(node.children[0])
            self.names.add(name)
            return lambda v: _known(v.get(name, MISSING), lambda x: x is True)
        if kind in ("in_", "not_in"):
            get = self.operand(node.children[0])
            options = [self.literal(c) for c in node.children[1:]]
            inside = kind == "in_"
            return lambda v: _known(get(v), lambda x: any(_equal(x, o) for o in options) == inside)
        raise FilterSyntaxError(1, "not a condition")  # pragma: no cover - every rule is handled above

    def operand(self, node: Tree | Token) -> _Get:
        if isinstance(node, Tree) and node.data == "name":
            name = str(node.children[0])
            self.names.add(name)
            return lambda v: v.get(name, MISSING)
        value = self.literal(node)
        return lambda v: value

    def literal(self, node: Tree | Token) -> Any:
        assert isinstance(node, Tree)
        if node.data == "string":
            return _unquote(str(node.children[0]))
        if node.data == "number":
            return Decimal(str(node.children[0]))
        return {"null": None, "true": True, "false": False}[str(node.data)]

    def _compare(self, left: _Get, op: str, right: _Get) -> _Eval:
        if op in ("=", "=="):
            return lambda v: _known2(left(v), right(v), _equal)
        if op in ("!=", "<>"):
            return lambda v: _known2(left(v), right(v), lambda a, b: not _equal(a, b))
        order: dict[str, Callable[[int], bool]] = {
            "<": lambda c: c < 0, "<=": lambda c: c <= 0, ">": lambda c: c > 0, ">=": lambda c: c >= 0}
        accept = order[op]

        def ordered(a: Any, b: Any) -> bool:
            c = _cmp(a, b)
            return c is not None and accept(c)

        return lambda v: _known2(left(v), right(v), ordered)

    def _text_test(self, left: _Get, op: str, right: _Get) -> _Eval:
        tests: dict[str, Callable[[str, str], bool]] = {
            "contains": lambda a, b: b in a, "startswith": str.startswith, "endswith": str.endswith}
        test = tests[op]

        def run(a: Any, b: Any) -> bool:
            if a is None or b is None:
                return False
            return test(_text(a).casefold(), _text(b).casefold())

        return lambda v: _known2(left(v), right(v), run)

    def _matches(self, left: _Get, pattern: Token) -> _Eval:
        try:
            regex = re.compile(_unquote(str(pattern)))
        except re.error as exc:
            raise FilterSyntaxError(pattern.column or 1, f"not a regular expression ({exc.msg})") from None
        return lambda v: _known(left(v), lambda x: x is not None and regex.search(_text(x)) is not None)


def _known(value: Any, test: Callable[[Any], bool]) -> Truth:
    return None if value is MISSING else test(value)


def _known2(a: Any, b: Any, test: Callable[[Any, Any], bool]) -> Truth:
    return None if a is MISSING or b is MISSING else test(a, b)


def _or(results: Iterable[Truth]) -> Truth:
    unknown = False
    for r in results:
        if r is True:
            return True
        unknown = unknown or r is None
    return None if unknown else False


def _and(results: Iterable[Truth]) -> Truth:
    unknown = False
    for r in results:
        if r is False:
            return False
        unknown = unknown or r is None
    return None if unknown else True


def _not(result: Truth) -> Truth:
    return None if result is None else not result


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value else None
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _moment(value: Any, like: date) -> date | None:
    """``value`` as a date or datetime comparable with ``like`` (ISO text is parsed)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(like, datetime) \
                else date.fromisoformat(value[:10])
        except ValueError:
            return None
    if isinstance(like, datetime):
        if not isinstance(value, datetime):
            return None
        if (value.tzinfo is None) != (like.tzinfo is None):
            return None
        return value
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else None


def _cmp(a: Any, b: Any) -> int | None:
    """-1/0/1 ordering of two non-null values, ``None`` when they do not compare."""
    if a is None or b is None:
        return None
    if isinstance(a, bool) or isinstance(b, bool):
        return (int(a) > int(b)) - (int(a) < int(b)) if isinstance(a, bool) and isinstance(b, bool) else None
    for x, y, flip in ((a, b, False), (b, a, True)):
        if isinstance(x, date):
            other = _moment(y, x)
            if other is None:
                return None
            c = (x > other) - (x < other)
            return -c if flip else c
    na, nb = _number(a), _number(b)
    if isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    if na is not None and nb is not None:
        return (na > nb) - (na < nb)
    return None


def _equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return _cmp(a, b) == 0


# --------------------------------------------------------------------------- exclusion lists and verdicts


def normalize_domain(domain: str) -> str:
    """``@Example.ORG`` -> ``example.org``."""
    return domain.strip().lstrip("@").rstrip(".").lower()


def _id(value: str) -> str:
    """A Salesforce id in its 18-character form; any other id (a local key) as it is."""
    return canonical_sfid(value.strip()) or value


def domain_of(address: str) -> str | None:
    """The domain of an email address (lower case), ``None`` when it has no ``@``."""
    _, at, domain = address.strip().rpartition("@")
    return normalize_domain(domain) if at and domain else None


@dataclass(frozen=True, slots=True)
class Exclusions:
    """Records never synced, in either direction."""

    emails: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()

    @classmethod
    def of(cls, emails: Iterable[str] = (), domains: Iterable[str] = (), ids: Iterable[str] = ()) -> Exclusions:
        return cls(frozenset(e.strip().lower() for e in emails), frozenset(normalize_domain(d) for d in domains),
                   frozenset(_id(i) for i in ids))

    def email(self, value: Any) -> str | None:
        """Why ``value`` (an email field's value) is excluded, or ``None``."""
        if not isinstance(value, str) or not value.strip():
            return None
        address = value.strip().lower()
        if address in self.emails:
            return "its email address is excluded"
        domain = domain_of(address)
        if domain is not None:
            parts = domain.split(".")
            if any(".".join(parts[i:]) in self.domains for i in range(len(parts))):
                return "its email domain is excluded"
        return None

    def record(self, *ids: str | None) -> str | None:
        """Why the record with these ids (Salesforce id, local key) is excluded, or ``None``."""
        if any(i is not None and _id(str(i)) in self.ids for i in ids):
            return "its id is excluded"
        return None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A record the filters keep from syncing: which rule (``filters.exclude_domains``) and why."""

    rule: str
    reason: str


def screen(condition: str | None, condition_key: str, exclusions: Exclusions, values: Values,
           email_key: str | None, ids: Iterable[str | None]) -> Verdict | None:
    """The :class:`Verdict` that keeps a record out, or ``None`` when it syncs.

    Exclusions are tried first (ids, then the email field ``email_key`` of ``values``), then ``condition``
    (key ``condition_key`` in the config). A condition that is unknown for these values (a name they do not
    carry), like an email list when the email is not carried, lets the record through: a change that does not
    touch what the filters read cannot make a synced record stop or start matching. (A record kept out at
    creation whose later change carries none of it passes too: judging that needs the record's earlier
    values, which only the caller's state has.)
    """
    ids = list(ids)
    why = exclusions.record(*ids)
    if why:
        return Verdict("filters.exclude_ids", why)
    if email_key is not None and (exclusions.emails or exclusions.domains):
        why = exclusions.email(values.get(email_key))
        if why:
            rule = "filters.exclude_emails" if why.startswith("its email address") else "filters.exclude_domains"
            return Verdict(rule, why)
    if condition is not None and compile_filter(condition).evaluate(values) is False:
        return Verdict(f"filters.{condition_key}", f"it does not match filters.{condition_key}")
    return None
