"""Salesforce record ids: 15-character case-sensitive ids and their 18-character checksummed form.

An id is ``<3-char key prefix><2-char pod><1 reserved><9-char base62 counter>``; the 18-character form
appends three checksum characters, each encoding which of five characters in a block are upper case.
"""

from __future__ import annotations

import string

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_CHECKSUM_ALPHABET = string.ascii_uppercase + "012345"
_ALNUM = frozenset(string.ascii_letters + string.digits)


def checksum(id15: str) -> str:
    """The three checksum characters for a 15-character id."""
    out = []
    for block in range(3):
        bits = 0
        for pos in range(5):
            ch = id15[block * 5 + pos]
            if "A" <= ch <= "Z":
                bits |= 1 << pos
        out.append(_CHECKSUM_ALPHABET[bits])
    return "".join(out)


def to18(id15: str) -> str:
    """Extend a 15-character id with its checksum."""
    return id15 + checksum(id15)


def make_id(prefix: str, counter: int, pod: str = "8d") -> str:
    """Build the 18-character id number ``counter`` for an object with key ``prefix``."""
    digits = []
    n = counter
    for _ in range(9):
        n, rem = divmod(n, 62)
        digits.append(_BASE62[rem])
    return to18(prefix + pod + "0" + "".join(reversed(digits)))


def normalize(value: object) -> str | None:
    """The canonical 18-character form of ``value``, or None if it is not a well-formed id.

    15-character ids get their checksum; 18-character ids must carry the right checksum (compared
    case-insensitively, as Salesforce does).
    """
    if not isinstance(value, str) or len(value) not in (15, 18) or not _ALNUM.issuperset(value):
        return None
    base = value[:15]
    full = to18(base)
    if len(value) == 18 and value[15:].upper() != full[15:]:
        return None
    return full
