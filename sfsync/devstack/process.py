"""Child-process helpers shared by the embedded services.

Every child is started so that it dies with its parent (Linux parent-death
signal), and :func:`stop_process` terminates, waits, then kills: the dev stack
leaves no process behind on exit, Ctrl-C, SIGTERM — or a kill -9 of itself.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


#: how many ports a server started on a port picked for it tries before giving up
PORT_ATTEMPTS = 3


def serve_on_free_port(serve: Callable[[], T], repick: Callable[[], object] | None, taken: type[Exception]) -> T:
    """``serve()``; when it raised ``taken`` and the port was picked for the server (``repick`` given), pick
    another (``repick()``) and serve again, :data:`PORT_ATTEMPTS` tries in all. A port that was free when
    :func:`free_port` picked it can be taken before the server binds it (a parallel test worker)."""
    if repick is not None:
        for _attempt in range(PORT_ATTEMPTS - 1):
            try:
                return serve()
            except taken:
                repick()
    return serve()


def die_with_parent(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies (Linux).

    The "parent" is the THREAD that started the child (``PR_SET_PDEATHSIG``): a child started from a
    short-lived thread gets ``sig`` as soon as that thread ends. Start children from a thread that lives
    as long as they should (the main thread).
    """
    def setup() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return setup


def spawn(
    argv: list[str],
    log_path: Path | None = None,
    *,
    user: str | None = None,
    env: dict[str, str] | None = None,
    death_signal: int = signal.SIGTERM,
    stdout: int | IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child that is terminated if this process dies; output goes to ``log_path``."""
    out: int | IO[bytes] | None = stdout
    if out is None:
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT if stdout is None else None,
        user=user,
        env={**os.environ, **(env or {})},
        preexec_fn=die_with_parent(death_signal),
    )


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal, wait up to ``timeout``, then SIGKILL. Safe to call twice."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except ProcessLookupError:
        pass
