"""A local Salesforce emulator speaking enough of the REST, Bulk 2.0 and Streaming (CometD/CDC) APIs for the
unmodified ``simple-salesforce`` and ``aiosfstream-ng`` clients. See docs/emulator.md."""

from __future__ import annotations

from pathlib import Path


def serve(port: int, state_dir: Path, schema_file: Path | None = None, host: str = "127.0.0.1") -> None:
    """Serve the emulator over HTTPS (blocking); see :func:`sfsync.emulator.server.serve`."""
    from sfsync.emulator.server import serve as _serve

    _serve(port, state_dir, schema_file, host)


__all__ = ["serve"]
