"""Schema drift, outbound: what is Salesforce-specific about a mapped Salesforce field that disappeared. No
I/O here. The direction-generic rules (stripping, parking, replaying, keys) are :mod:`consumers.drift`;
this module binds them to the outbound direction, so the Salesforce sink's calls stay as they were.
docs/schema-drift.md.

Contracts (on top of :mod:`consumers.drift`):

- :func:`outbound_fields`: per object, the mapped fields the sink writes (direction ``both`` /
  ``to_salesforce``), each with its mapping entry path; the external id field is the write's key, never a
  field to suspend. Keyed by lower-case field name.
- :func:`drift_candidate`: a failure that may mean drift: ``INVALID_FIELD`` / ``INVALID_TYPE``. Which
  fields are gone is never read from the message text: :func:`missing` compares the mapping with the
  object's describe, which decides.
- :func:`record_identity`, :func:`newest_per_record`: the generic ones for the outbound direction (a
  record is named by its local key, else its sfid).
"""

from __future__ import annotations

from collections.abc import Iterable

from consumers.drift import (
    PARKED_PREFIX,
    MappedField,
    Suspension,
    missing,
    parked_command,
    parked_key,
    parked_prefix,
    replay_command,
    strip,
    suspension_message,
)
from consumers.drift import mapped_targets as _mapped_targets
from consumers.drift import newest_per_record as _newest_per_record
from consumers.drift import record_identity as _record_identity
from sfsync.config import SfsyncConfig
from sfsync.failures import Failure
from sfsync.records import ApplyCommand, Direction

__all__ = ["DRIFT_CODES", "PARKED_PREFIX", "MappedField", "Suspension", "drift_candidate", "missing",
           "newest_per_record", "outbound_fields", "parked_command", "parked_key", "parked_prefix",
           "record_identity", "replay_command", "strip", "suspension_message"]

#: Salesforce codes that can mean a mapped field (or object) is gone
DRIFT_CODES = frozenset({"INVALID_FIELD", "INVALID_TYPE"})


def outbound_fields(cfg: SfsyncConfig) -> dict[str, dict[str, MappedField]]:
    """object -> lower-case field name -> :class:`MappedField` (see module contract)."""
    return _mapped_targets(cfg, Direction.OUTBOUND)


def drift_candidate(failure: Failure | None) -> bool:
    """True for a failure that may mean a mapped field is gone (the describe decides)."""
    return failure is not None and failure.error_class in DRIFT_CODES


def record_identity(command: ApplyCommand) -> str | None:
    """What names the record in an outbound parked key: its local key, else its sfid."""
    return _record_identity(command, Direction.OUTBOUND)


def newest_per_record(parked: Iterable[ApplyCommand]) -> list[ApplyCommand]:
    """The newest parked value of each record (outbound identity)."""
    return _newest_per_record(parked, Direction.OUTBOUND)
