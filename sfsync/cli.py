"""The ``sfsync`` command line (typer + rich).

Every command takes ``--config FILE`` (default ``./sfsync.yaml``, env
``SFSYNC_CONFIG``). Exit codes: 0 success, 1 operational failure (a broker
that does not answer, a topic that could not be created), 2 invalid config
or usage.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sfsync.config import ConfigError, SfsyncConfig, load_config, read_yaml, resolve_config_path
from sfsync.signals import stop_on_signals

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Two-way Salesforce <-> PostgreSQL sync over Kafka.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect and validate configuration.")
topics_app = typer.Typer(no_args_is_help=True, help="Create and compare Kafka topics.")
app.add_typer(config_app, name="config")
schema_app = typer.Typer(no_args_is_help=True, help="Install or remove sfsync's tables and triggers.")
app.add_typer(topics_app, name="topics")
app.add_typer(schema_app, name="schema")

console = Console()

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default ./sfsync.yaml, env SFSYNC_CONFIG)."),
]

TimeoutOpt = Annotated[float, typer.Option(help="Seconds to wait for the broker.")]


def _fail(message: str, code: int) -> typer.Exit:
    """Print an error unwrapped (scripts grep for key paths) and return the exit to raise."""
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _load(path: Path | None) -> SfsyncConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        raise _fail(str(e), 2) from None


@config_app.command("check")
def config_check(
    file: Annotated[Path | None, typer.Argument(help="Config file to check.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Validate a config file; print every problem with its key path (exit 2) or a summary (exit 0)."""
    path = file or config
    try:
        cfg = load_config(path, require_file=True)
    except ConfigError as e:
        raise _fail(str(e), 2) from None
    table = Table(title=f"{resolve_config_path(path)}: valid", show_header=False)
    for key, value in cfg.summary().items():
        table.add_row(key, value)
    console.print(table)


def _topic_table(title: str, reports: list[Any]) -> Table:
    table = Table(title=title)
    for col in ("topic", "partitions", "policy", "state", "details"):
        table.add_column(col)
    colours = {"ok": "green", "created": "cyan", "missing": "yellow", "mismatch": "red", "failed": "red"}
    for r in reports:
        table.add_row(
            r.spec.name,
            f"{r.actual_partitions if r.actual_partitions is not None else '-'} / {r.spec.partitions}",
            r.spec.config.get("cleanup.policy", ""),
            f"[{colours[r.state.value]}]{r.state.value}[/]",
            "; ".join(r.problems) or r.spec.purpose,
        )
    return table


@topics_app.command("apply")
def topics_apply(config: ConfigOpt = None, timeout: TimeoutOpt = 15.0) -> None:
    """Create missing topics; report (never change) mismatched ones; never delete."""
    from sfsync.kafka.topics import TopicState, apply_topics

    cfg = _load(config)
    try:
        reports = apply_topics(cfg, timeout)
    except Exception as e:  # KafkaException: broker unreachable, auth failure
        raise _fail(f"cannot reach Kafka at {cfg.kafka.bootstrap_servers}: {e}", 1) from None
    console.print(_topic_table("topics apply", reports))
    bad = [r for r in reports if r.state in (TopicState.MISMATCH, TopicState.FAILED)]
    if bad:
        raise _fail(f"{len(bad)} topic(s) differ from the catalogue or failed; nothing was changed", 1)


@topics_app.command("list")
def topics_list(config: ConfigOpt = None, timeout: TimeoutOpt = 15.0) -> None:
    """Show the catalogue next to what the broker has."""
    from sfsync.kafka.topics import inspect_topics

    cfg = _load(config)
    try:
        reports = inspect_topics(cfg, timeout)
    except Exception as e:
        raise _fail(f"cannot reach Kafka at {cfg.kafka.bootstrap_servers}: {e}", 1) from None
    console.print(_topic_table("catalogue vs broker", reports))


@app.command()
def dev(
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="Where endpoints.json, sfsync.yaml and data go.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the whole pipeline locally on embedded services until Ctrl-C."""
    from sfsync.devstack.stack import DevStack

    base: dict[str, Any] = {}
    cfg_path = resolve_config_path(config)
    if cfg_path.exists():
        try:
            base = read_yaml(cfg_path)
        except ConfigError as e:
            raise _fail(str(e), 2) from None
    directory = state_dir or Path(tempfile.mkdtemp(prefix="sfsync-dev-"))
    stop = stop_on_signals()
    stack = DevStack(directory, base)
    with console.status("starting embedded broker, PostgreSQL, Salesforce emulator, roles ..."):
        try:
            endpoints = stack.start()
        except ConfigError as e:
            raise _fail(str(e), 2) from None
    table = Table(title="sfsync dev stack")
    table.add_column("service")
    table.add_column("where")
    shown = endpoints.to_json()
    health = shown.pop("health", {})
    for key, value in shown.items():
        if key == "roles":
            for name, pid in value.items():
                table.add_row(name, f"pid {pid}, ready at {health.get(name, '?')}/readyz, "
                                    f"log {directory / 'logs' / (name + '.log')}")
        elif key == "salesforce":
            table.add_row("salesforce", f"{value['url']} (user {value['username']}, CA {value['ca']})")
        else:
            table.add_row(key, str(value))
    table.add_row("state dir", str(directory))
    console.print(table)
    console.print(f"ready: endpoints in {directory / 'endpoints.json'}; Ctrl-C stops everything")
    sys.stdout.flush()
    try:
        while not stop.wait(1.0):
            for name in stack.roles.restart_dead():
                console.print(f"[yellow]role {name} exited; restarted (log in {directory / 'logs'})[/yellow]")
    finally:
        console.print("stopping ...")
        stack.stop()
        console.print("stopped")


@app.command()
def run(
    role: Annotated[str, typer.Argument(help="salesforce-producer | processor | postgres-sink | "
                                              "postgres-producer | salesforce-sink")],
    config: ConfigOpt = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    health_port: Annotated[int | None, typer.Option(
        "--health-port", help="Serve /healthz and /readyz here (0: any free port); default health.port.")] = None,
) -> None:
    """Run one role of the pipeline until SIGINT/SIGTERM."""
    import logging

    from sfsync.health import Health, HealthServer
    from sfsync.roles import READINESS, ROLES

    if role not in ROLES:
        raise _fail(f"unknown role {role!r}; one of: {', '.join(ROLES)}", 2)
    cfg = _load(config)
    logging.basicConfig(level=log_level.upper(), format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")
    # the faust worker handles its own signals
    stop = threading.Event() if role == "processor" else stop_on_signals()
    health = Health(role, READINESS[role])
    port = health_port if health_port is not None else cfg.health.port
    server = HealthServer(health, cfg.health.host, port).start() if port is not None else None
    try:
        ROLES[role](cfg, stop, health)
    finally:
        if server is not None:
            server.close()


@schema_app.command("init")
def schema_init(
    config: ConfigOpt = None,
    demo: Annotated[bool, typer.Option("--demo", help="Also create the demo tables the example config maps.")] = False,
) -> None:
    """Create sfsync's tables and the change-capture triggers of every mapped table (idempotent)."""
    import psycopg

    from sfsync.database.schema import SchemaError, init_schema

    cfg = _load(config)
    try:
        lines = init_schema(cfg, demo=demo)
    except (SchemaError, psycopg.Error) as e:
        raise _fail(str(e), 1) from None
    for line in lines:
        console.print(line)


@schema_app.command("drop")
def schema_drop(
    config: ConfigOpt = None,
    outbox: Annotated[bool, typer.Option(
        "--outbox", help="Also drop the outbox, its archive and the field version store.")] = False,
) -> None:
    """Remove sfsync's triggers and functions (never user tables)."""
    import psycopg

    from sfsync.database.schema import SchemaError, drop_schema

    cfg = _load(config)
    try:
        lines = drop_schema(cfg, drop_outbox=outbox)
    except (SchemaError, psycopg.Error) as e:
        raise _fail(str(e), 1) from None
    for line in lines:
        console.print(line)


@app.command()
def emulator(
    port: Annotated[int, typer.Option(help="HTTPS port (0 = any free port).")] = 0,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="Where ca.pem and state go.")
    ] = Path(".sfsync/emulator"),
    schema: Annotated[Path | None, typer.Option(help="YAML with extra objects/fields.")] = None,
) -> None:
    """Run the local Salesforce emulator (HTTPS; prints 'ready https://127.0.0.1:P')."""
    from sfsync.emulator import serve

    state_dir.mkdir(parents=True, exist_ok=True)
    serve(port=port, state_dir=state_dir, schema_file=schema)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
