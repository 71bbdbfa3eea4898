"""The Salesforce sink's drift state: :class:`consumers.suspend.DriftStore` for sink ``salesforce``,
direction outbound (keys ``field:outbound:…`` / ``parked:outbound:…``). The contract is in
:mod:`consumers.suspend`; docs/schema-drift.md."""

from __future__ import annotations

from consumers.suspend import DriftStore as _DriftStore
from sfsync.config import SfsyncConfig
from sfsync.records import Direction

SINK = "salesforce"
DIRECTION = Direction.OUTBOUND


class DriftStore(_DriftStore):
    """The outbound store (see module docstring)."""

    def __init__(self, cfg: SfsyncConfig, timeout: float = 30.0) -> None:
        super().__init__(cfg, sink=SINK, direction=DIRECTION, timeout=timeout)
