"""``sfsync audit``: the losing changes and ambiguous matches kept in ``<schema>.sfsync_audit``.

A module of its own so the command is registered in :mod:`sfsync.cli` with one call
(``register(app)``); it imports nothing from :mod:`sfsync.cli` (no import cycle). Same conventions as
the other commands: ``--config FILE``, ``--json`` for scripts, exit 2 for invalid usage or config, 1 when
the database cannot be read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sfsync.config import ConfigError, SfsyncConfig, load_config


def _fail(message: str, code: int) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _load(path: Path | None) -> SfsyncConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        raise _fail(str(e), 2) from None


def parse_since(value: str | None) -> datetime | None:
    """An ISO date or date-time (UTC when it names no offset); ``None`` passes through."""
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise _fail("--since: not an ISO date/time (e.g. 2025-01-31 or 2025-01-31T08:00+01:00)", 2) from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def audit(
    config: Annotated[Path | None, typer.Option("--config", "-c",
                                                help="Config file (default ./sfsync.yaml, env SFSYNC_CONFIG).")] = None,
    object: Annotated[str | None, typer.Option("--object", help="Only this object (e.g. Contact).")] = None,
    record: Annotated[str | None, typer.Option("--record",
                                               help="Record id: Salesforce id, local key or record key.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="At or after this time (ISO).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows, newest first.")] = 100,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Losing changes (both values, the policy, the time) and ambiguous first-sync matches, newest first."""
    import json

    import psycopg

    from sfsync.operations.audit import AuditError, AuditFilter, read_audit

    cfg = _load(config)
    if object is not None and object not in cfg.objects:
        raise _fail(f"unknown object {object!r}; mapped objects: {', '.join(cfg.objects) or '(none)'}", 2)
    flt = AuditFilter(object=object, record=record, since=parse_since(since), limit=limit)
    try:
        rows = read_audit(cfg, flt)
    except AuditError as e:
        raise _fail(str(e), 1) from None
    except psycopg.Error as e:  # the message names host and port at most, never the password
        raise _fail(f"cannot read the audit from PostgreSQL: {type(e).__name__}: {str(e).strip()}", 1) from None
    if json_out:
        typer.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    table = Table(title=f"audit ({len(rows)} row(s), newest first)")
    for col in ("Time", "Object", "Direction", "Record", "State", "Detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r.updated_ts.strftime("%Y-%m-%d %H:%M:%S"), r.object, r.direction,
                      r.sfid or r.local_key or r.record_key, r.state, r.detail or "")
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``audit`` to ``app`` (the ``sfsync`` command line)."""
    app.command("audit")(audit)
