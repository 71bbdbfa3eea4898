"""The asyncio event loop the async roles (processor, CDC producer) run on.

uvloop when it is installed (a dependency on Linux/macOS): faust's and aiohttp's per-message cost is
largely event-loop work, and on this 2-core machine uvloop gave the processor ~20% more events/s
(bench/inbound.py). Plain asyncio elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a uvloop loop when available, without changing the global loop policy."""
    with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
        return runner.run(main)


def use_uvloop() -> bool:
    """Make every new event loop of this process a uvloop loop (for frameworks that create their own,
    like faust's worker). Only for processes that run one role. True if uvloop is in use."""
    factory = _uvloop_factory()
    if factory is None:
        return False
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
