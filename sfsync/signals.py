"""SIGTERM and SIGINT as a stop event: how every long-running command ends cleanly.

A role loop checks a :class:`threading.Event`; the first SIGTERM (Kubernetes,
``sfsync dev`` stopping its children) or SIGINT (Ctrl-C) sets it, the loop
finishes the batch in hand, flushes, commits, and returns. Signal handlers can
only be installed from the main thread; elsewhere the event is returned as is.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """``stop`` (or a new event), set on SIGTERM/SIGINT when called from the main thread."""
    event = stop if stop is not None else threading.Event()
    if threading.current_thread() is threading.main_thread():

        def _set(_signum: int, _frame: FrameType | None) -> None:
            event.set()

        signal.signal(signal.SIGTERM, _set)
        signal.signal(signal.SIGINT, _set)
    return event
