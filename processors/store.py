"""Where the processor keeps its ``records`` Table: the faust App settings for the store.

Today the Table lives in memory (``memory://``) and a restarted worker rebuilds it from the changelog.
:func:`store_settings` is the one place that decides it, so a durable store (issue 11: RocksDB through
``rocksdict``) changes this module and the config, not the app.
"""

from __future__ import annotations

from typing import Any

from sfsync.config import SfsyncConfig


def store_settings(cfg: SfsyncConfig) -> dict[str, Any]:
    """The ``faust.App`` keyword arguments that choose and place the Table store."""
    del cfg
    return {"store": "memory://"}
