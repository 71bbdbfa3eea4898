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
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sfsync.config import ConfigError, SfsyncConfig, load_config, read_yaml, resolve_config_path
from sfsync.signals import stop_on_signals

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sfsync.operations.acks import AckReport
    from sfsync.records import SinkAck

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Two-way Salesforce <-> PostgreSQL sync over Kafka.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect and validate configuration.")
topics_app = typer.Typer(no_args_is_help=True, help="Create and compare Kafka topics.")
app.add_typer(config_app, name="config")
schema_app = typer.Typer(no_args_is_help=True, help="Install or remove sfsync's tables and triggers.")
app.add_typer(topics_app, name="topics")
app.add_typer(schema_app, name="schema")
mapping_app = typer.Typer(no_args_is_help=True, help="Check the mapping against the org and the database.")
app.add_typer(mapping_app, name="mapping")

console = Console()

def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from sfsync import __version__

        try:
            installed = version("sfsync")
        except PackageNotFoundError:
            installed = __version__
        typer.echo(f"sfsync {installed}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Two-way Salesforce <-> PostgreSQL sync over Kafka."""
    import logging

    global console
    console = Console()  # sized now, per invocation (``COLUMNS``, the terminal), not when the module was imported

    from sfsync.kafka.settings import LIBRDKAFKA_LOG

    # librdkafka's lines reach Python logging; a command reports failures itself, and only `run` (which
    # configures logging) shows them
    if not LIBRDKAFKA_LOG.handlers:
        LIBRDKAFKA_LOG.addHandler(logging.NullHandler())


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default ./sfsync.yaml, env SFSYNC_CONFIG)."),
]

TimeoutOpt = Annotated[float, typer.Option(help="Seconds to wait for the broker.")]


def _fail(message: str, code: int) -> typer.Exit:
    """Print an error unwrapped (scripts grep for key paths) and return the exit to raise."""
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _load(path: Path | None, *, require_file: bool = False) -> SfsyncConfig:
    try:
        return load_config(path, require_file=require_file)
    except ConfigError as e:
        if require_file and path is None and not e.problems[0].path:
            raise _fail(f"no config file: {resolve_config_path(None)} does not exist (pass --config FILE or set "
                        "SFSYNC_CONFIG)", 2) from None
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
    health_url_file: Annotated[Path | None, typer.Option(
        "--health-url-file", help="Write the health server's URL to this file once it listens: how a "
                                  "supervisor learns the port of --health-port 0.")] = None,
    check_mapping: Annotated[bool, typer.Option(
        "--check-mapping/--no-check-mapping",
        help="Run the mapping check first and refuse to start on errors (default on).")] = True,
) -> None:
    """Run one role of the pipeline until SIGINT/SIGTERM (after the mapping check, see ``mapping check``)."""
    import logging

    from sfsync.config.credentials import started_from
    from sfsync.health import Health, HealthServer
    from sfsync.roles import READINESS, ROLES

    if role not in ROLES:
        raise _fail(f"unknown role {role!r}; one of: {', '.join(ROLES)}", 2)
    cfg = _load(config, require_file=True)
    # refused credentials are re-read from this file (not resolved: a mounted secret is swapped via a symlink)
    started_from(resolve_config_path(config).absolute())
    logging.basicConfig(level=log_level.upper(), format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")
    if check_mapping:
        mapping_gate(cfg, role)
    _require_broker(cfg, role)
    # the faust worker handles its own signals
    stop = threading.Event() if role == "processor" else stop_on_signals()
    health = Health(role, READINESS[role])
    port = health_port if health_port is not None else cfg.health.port
    server = HealthServer(health, cfg.health.host, port).start() if port is not None else None
    if health_url_file is not None:
        if server is None:
            raise _fail("--health-url-file needs a health server: give --health-port or health.port", 2)
        from sfsync.files import write_atomically

        write_atomically(health_url_file, server.url)
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
        "--outbox", help="Also drop sfsync's own tables: the outbox, its archive, the field version store, "
                    "the unlinked rows and the audit.")] = False,
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
def backfill(
    object: Annotated[str, typer.Argument(help="The mapped Salesforce object, e.g. Contact.")],
    config: ConfigOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read both sides and print the plan; write nothing.")]
    = False,
    json_out: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """First sync of an object: pair unlinked records on its match_key, link the pairs, and send the rest
    through the running pipeline (local-only rows are created in Salesforce, Salesforce-only records locally).
    Several candidates for one key are reported as ambiguous and neither linked nor copied. Safe to run
    again. Exit 0 done (ambiguous groups are listed), 1 a side unreachable, 2 usage."""
    from sfsync import roles

    cfg = _load(config)
    try:
        report: dict[str, Any] = roles.backfill(cfg, object, dry_run=dry_run)
    except roles.BackfillFailed as e:
        raise _fail(f"backfill {object}: {e}", 2) from None
    except Exception as e:  # psycopg / Salesforce / Kafka errors: name the failing side, no traceback
        raise _fail(f"backfill {object} failed: {type(e).__name__}: {e}", 1) from None
    if json_out:
        _print_json(report)
        return
    plan = report["plan"]
    table = Table(title=f"backfill {object}{' (dry run: nothing written)' if dry_run else ''}")
    table.add_column("")
    table.add_column("records", justify="right")
    rows = [("already linked (local / Salesforce)",
             f"{report['already_linked']['local']} / {report['already_linked']['salesforce']}"),
            ("pairs matched on the match key", str(plan["linked"])),
            ("pairs linked now", str(report["linked"])),
            ("links repaired (external id named the row)", str(report["relinked"])),
            ("local only: created in Salesforce", str(plan["local_only"])),
            ("Salesforce only: created locally", str(plan["salesforce_only"])),
            ("ambiguous groups (local / Salesforce records)",
             f"{plan['ambiguous_groups']} ({plan['ambiguous_local']} / {plan['ambiguous_salesforce']})"),
            ("refused", str(len(report["refused"]))),
            ("Salesforce API calls", str(report["salesforce_calls"]))]
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)
    for group in report["ambiguous"]:
        typer.secho(f"  ambiguous {', '.join(group['match'])}: local {', '.join(group['local_keys'])}; "
                    f"Salesforce {', '.join(group['sfids'])}", fg=typer.colors.YELLOW)
    for line in report["refused"]:
        typer.secho(f"  refused {line}", err=True, fg=typer.colors.RED)


@app.command("sync")
def sync_records(
    object: Annotated[str, typer.Argument(help="The mapped Salesforce object, e.g. Contact.")],
    record: Annotated[str | None, typer.Argument(help="A Salesforce id or a local key (or --all).")] = None,
    config: ConfigOpt = None,
    every: Annotated[bool, typer.Option("--all", help="Every record of the object, with a progress bar.")] = False,
    source: Annotated[str | None, typer.Option(
        "--from", help="salesforce | local: the side whose values are pushed (default: the id's side; with --all "
                       "salesforce, or local for an object whose every field is to_salesforce).")] = None,
    page_size: Annotated[int | None, typer.Option(
        "--page-size", help="--all from Salesforce: records per query page, 200..2000 (default 2000).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Force sync: re-read a record (or, with --all, every record) from its source and push it through the
    running pipeline now. From Salesforce: a snapshot to changes.inbound (PostgreSQL gets Salesforce's
    values, by the conflict policy); from PostgreSQL: the row into the outbox (Salesforce gets the local
    values). Exit 0 pushed, 1 a side unreachable, 2 usage (unknown object, no such record, wrong id)."""
    from rich.progress import Progress

    from sfsync.operations.forcesync import ForceSyncError, SyncSource, force_sync_all, force_sync_record
    from sfsync.salesforce.paced import BudgetSpent

    cfg = _load(config)
    if every == (record is not None):
        raise _fail(f"sync {object}: give a record id (Salesforce id or local key) or --all, not "
                    f"{'both' if every else 'neither'}", 2)
    try:
        side = SyncSource(source.lower()) if source is not None else None
    except ValueError:
        raise _fail(f"unknown --from {source!r}; one of: salesforce, local", 2) from None
    try:
        if record is not None:
            report = force_sync_record(cfg, object, record, source=side)
        else:
            with Progress(console=console, transient=True, disable=json_out) as progress:
                task = progress.add_task(f"sync {object}", total=None)

                def advance(n: int, total: int | None) -> None:
                    if total is not None:
                        progress.update(task, total=total)
                    progress.advance(task, n)

                report = force_sync_all(cfg, object, source=side, progress=advance, page_size=page_size)
    except ForceSyncError as e:
        raise _fail(f"sync {object}: {e}", 2) from None
    except BudgetSpent as e:
        raise _fail(f"sync {object}: {e}; run it again later", 1) from None
    except Exception as e:  # psycopg / Salesforce / Kafka errors: name the failing side, no traceback
        raise _fail(f"sync {object} failed: {type(e).__name__}: {e}", 1) from None
    if json_out:
        _print_json(report.to_json())
        return
    if record is not None:
        where = ("Salesforce -> PostgreSQL (a snapshot on changes.inbound)" if report.inbound
                 else "PostgreSQL -> Salesforce (the row into the outbox)")
        typer.echo(f"sync {object} {', '.join(report.records or [record])}: pushed {where}; "
                   f"{report.api_calls} Salesforce API call(s)")
        return
    table = Table(title=f"sync {object} --all (from {report.source.value})")
    table.add_column("")
    table.add_column("records", justify="right")
    table.add_row("pushed Salesforce -> PostgreSQL", str(report.inbound))
    table.add_row("pushed PostgreSQL -> Salesforce", str(report.outbound))
    table.add_row("Salesforce API calls", str(report.api_calls))
    console.print(table)
    typer.echo(f"sync {object} --all: pushed {report.inbound + report.outbound} record(s) from "
               f"{report.source.value}; {report.api_calls} Salesforce API call(s)")


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


def _print_report_lines(lines: list[str]) -> None:
    """The problem report, unwrapped (scripts grep for the entry paths), errors in red."""
    for line in lines:
        typer.secho(line, err=True, fg=None if line.startswith(("  warning:", "  not checked:")) else typer.colors.RED)


@mapping_app.command("check")
def mapping_check(config: ConfigOpt = None) -> None:
    """Check the mapping against the org's describe and the local tables: every problem with its entry path
    (exit 2), a side that cannot be reached (exit 1), or a summary table (exit 0)."""
    from sfsync.mappingcheck import problem_lines, summary_table
    from sfsync.mappingcheck.sources import run_check

    cfg = _load(config)
    report = run_check(cfg)
    _print_report_lines(problem_lines(report))
    if report.errors:
        raise typer.Exit(2)
    # the verdict as one plain line: a table title wraps with a long path, and scripts grep for it
    typer.echo(f"{resolve_config_path(config)}: mapping {'fits' if not report.skipped else 'partly checked'}")
    console.print(summary_table(report, None))
    if report.skipped:
        raise typer.Exit(1)


@mapping_app.command("export")
def mapping_export(
    config: ConfigOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Write the effective mapping (file + environment, every default spelled out) as YAML: ``objects:``."""
    import yaml

    cfg = _load(config)
    objects = {name: obj.model_dump(mode="json") for name, obj in cfg.objects.items()}
    text = yaml.safe_dump({"objects": objects}, sort_keys=False, allow_unicode=True)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


@mapping_app.command("diff")
def mapping_diff(
    old: Annotated[Path, typer.Argument(help="The config in use now.")],
    new: Annotated[Path, typer.Argument(help="The changed config.")],
    count: Annotated[bool, typer.Option(
        "--count", help="Count the records a re-sync would touch (asks Salesforce and PostgreSQL through NEW's "
                        "connections; without it nothing is contacted).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """What changing the mapping from OLD to NEW does, per object, and what a re-sync would touch. Exit 0
    when they map the same, 3 when they differ, 2 when a file is unreadable or invalid."""
    from sfsync.mappingcheck.diff import diff_json, diff_lines, diff_mappings

    loaded: list[SfsyncConfig] = []
    problems: list[str] = []
    for path in (old, new):  # one loader for both: environment overrides apply to each alike
        try:
            loaded.append(load_config(path, require_file=True))
        except ConfigError as e:
            problems.append(str(e))
    if problems:
        raise _fail("\n".join(problems), 2)
    before, after = loaded
    found = diff_mappings(before, after)
    counts = None
    if count:
        from sfsync.mappingcheck.counts import count_targets

        counts = count_targets(after, found.targets())
    if json_out:
        _print_json(diff_json(found, counts))
    else:
        for line in diff_lines(found, counts):
            typer.echo(line)
    if found.changed:
        raise typer.Exit(3)


#: the sides each role cannot start without, besides Kafka (the mapping check reaches them first)
NEEDS: dict[str, tuple[str, ...]] = {
    "salesforce-producer": ("salesforce",), "postgres-producer": ("postgres",), "postgres-sink": ("postgres",),
    "salesforce-sink": ("salesforce", "postgres"),
}


def _require_broker(cfg: SfsyncConfig, role: str, timeout: float = 15.0) -> None:
    """A role starts only against a broker that answers: else one line naming it, exit 2 (once started, a
    role rides out a broker outage with retries)."""
    from confluent_kafka.admin import AdminClient

    from sfsync.kafka.settings import admin_settings

    try:
        AdminClient(admin_settings(cfg.kafka)).list_topics(timeout=timeout)
    except Exception as e:  # KafkaException: the broker did not answer in time
        first = e.args[0] if e.args else e
        reason = first.str() if hasattr(first, "str") else str(first)
        raise _fail(f"{role} cannot start: cannot reach Kafka at {cfg.kafka.bootstrap_servers}: {reason}",
                    2) from None


def mapping_gate(cfg: SfsyncConfig, role: str) -> None:
    """What every role runs before it starts: the mapping check. Errors: print them (the same lines as
    ``mapping check``), log them, exit 2. A side the role needs (:data:`NEEDS`) that cannot be reached
    (down, refused credentials) is one line and exit 2: a role starts only against what it writes to or
    reads from, and rides out outages only once started. Other unreachable sides are logged."""
    import logging

    from sfsync.mappingcheck import problem_lines
    from sfsync.mappingcheck.sources import run_check

    if not cfg.objects or role == "notifier":  # the notifier maps nothing
        return
    log = logging.getLogger("sfsync.mapping")
    report = _drift_is_not_an_error(cfg, run_check(cfg, f"sfsync-{role}-mapping-check"))
    lines = problem_lines(report)
    if report.errors:
        _print_report_lines([f"{role} refuses to start: " + lines[0], *lines[1:]])
        log.error("%s refuses to start: %d mapping error(s), listed above; see sfsync mapping check", role,
                  len(report.errors))
        raise typer.Exit(2)
    for side in NEEDS.get(role, ()):
        for skipped in report.skipped:
            if skipped.startswith(f"{side}:"):
                typer.secho(f"{role} cannot start: {skipped}", err=True, fg=typer.colors.RED)
                raise typer.Exit(2)
    for line in lines:
        log.warning("mapping check: %s", line.strip())


def _drift_is_not_an_error(cfg: SfsyncConfig, report: Any) -> Any:
    """``report`` with problems about Salesforce fields and local columns the sinks have suspended (schema
    drift, docs/schema-drift.md) as warnings: a role restarted while a field is gone starts, and the sink keeps
    the field suspended until it is back. ``mapping check`` itself still reports them as errors."""
    from dataclasses import replace

    from sfsync.mappingcheck.rules import Severity
    from sfsync.operations.control import suspended_fields
    from sfsync.records import Direction

    if not report.errors:
        return report
    try:
        suspended = suspended_fields(cfg)
        columns = suspended_fields(cfg, Direction.INBOUND)
    except Exception as e:  # the broker down: the errors stand, as without drift
        import logging

        logging.getLogger("sfsync.mapping").warning("cannot read suspended fields: %s", type(e).__name__)
        return report
    names = {f"{obj}.{name}" for obj, name in suspended}  # problems name the field ``Contact.Title__c``
    # a suspended local column: the entry paths mapping it (those problems say "has no column <c>")
    paths = {f"objects.{obj}.fields[{i}]" for obj, column in columns if obj in cfg.objects
             for i, f in enumerate(cfg.objects[obj].fields) if f.column == column}
    for i, p in enumerate(report.problems):
        if p.severity is Severity.ERROR and (p.sf_field in names or (p.path in paths and "has no column" in p.message)):
            report.problems[i] = replace(p, severity=Severity.WARNING,
                                         message=p.message + " (suspended by schema drift)")
    return report


# ------------------------------------------------------------------ operations (sfsync.operations)

DirectionArg = Annotated[str, typer.Argument(help="inbound (Salesforce -> PostgreSQL) | outbound")]
ObjectOpt = Annotated[str | None, typer.Option("--object", help="Only this object (e.g. Contact).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


def _direction(value: str) -> Any:
    from sfsync.records import Direction

    try:
        return Direction(value.lower())
    except ValueError:
        raise _fail(f"unknown direction {value!r}; one of: inbound, outbound", 2) from None


def _kafka_down(cfg: SfsyncConfig, e: Exception) -> typer.Exit:
    return _fail(f"cannot reach Kafka at {cfg.kafka.bootstrap_servers}: {e}", 1)


WaitOpt = Annotated[float, typer.Option(
    "--wait", min=0, help="Wait up to this many seconds until every running sink of the direction took it "
                          "(0: return once the broker has it).")]


def _control(action_name: str, direction: str, obj: str | None, reason: str | None, config: Path | None,
             wait: float) -> None:
    from sfsync.operations.acks import wait_for_acks
    from sfsync.operations.control import ControlScope, set_control
    from sfsync.records import ControlAction

    cfg = _load(config)
    scope = ControlScope(_direction(direction), obj)
    if obj is not None and obj not in cfg.objects:
        raise _fail(f"unknown object {obj!r}; mapped objects: {', '.join(cfg.objects) or '(none)'}", 2)
    try:
        written = set_control(cfg, scope, ControlAction(action_name), reason=reason)
    except Exception as e:  # KafkaException, DeliveryError, FlushTimeout
        raise _kafka_down(cfg, e) from None
    record = written.record
    console.print(f"{scope}: {record.action.value}d by {record.requested_by} at {record.ts:%Y-%m-%d %H:%M:%S} UTC")
    if wait <= 0:
        return
    try:
        report = wait_for_acks(cfg, scope.direction, written.position, wait)
    except Exception as e:  # KafkaException, LookupError
        raise _kafka_down(cfg, e) from None
    _print_acks(report, record.action.value, wait)


def _print_acks(report: AckReport, action: str, wait: float) -> None:
    """Which sink instances took the change; exit 1 when a running one did not within ``wait`` seconds."""
    from sfsync.operations.acks import STALE_BEATS
    from sfsync.records import utcnow

    now = utcnow()

    def named(acks: Iterable[SinkAck]) -> str:
        return ", ".join(a.instance for a in acks)

    def ago(ack: SinkAck) -> str:
        return f"{ack.instance} (last beat {max(0.0, (now - ack.ts).total_seconds()):.0f} s ago)"

    direction = report.direction.value
    if report.acknowledged:
        sinks = sorted({a.sink for a in report.acknowledged})
        n = len(report.acknowledged)
        console.print(f"acknowledged by {n} running {'/'.join(sinks)} sink{'s' if n > 1 else ''}: "
                      f"{named(report.acknowledged)}", soft_wrap=True)
    elif report.done:
        console.print(f"no running {direction} sink to wait for: a sink that starts reads the control state "
                      "before it writes anything", soft_wrap=True)
    if report.stale:
        console.print(f"not waited for (silent for over {STALE_BEATS} beats, taken for stopped): "
                      + ", ".join(ago(a) for a in report.stale), soft_wrap=True)
    if not report.complete:
        raise _fail(f"{action} is in force, but the control topic could not be read to its end within {wait:g} s: "
                    "which sinks took it is unknown", 1)
    if report.pending:
        raise _fail(f"{action} is in force, but {len(report.pending)} running {direction} sink instance(s) did not "
                    f"acknowledge it within {wait:g} s: " + ", ".join(ago(a) for a in report.pending)
                    + ("; they may still write what the pause covers" if action == "pause" else
                       "; they may not write yet")
                    + " (check their logs; an instance that was killed stops counting once silent for "
                    f"{STALE_BEATS} beats)", 1)


@app.command()
def pause(direction: DirectionArg, object: ObjectOpt = None,
          reason: Annotated[str | None, typer.Option(help="Why (shown by `sfsync status`).")] = None,
          wait: WaitOpt = 30.0, config: ConfigOpt = None) -> None:
    """Pause a direction's sink (or one object of it): capture keeps going, nothing is written or dropped.
    Returns once every running sink of the direction took the pause (writes nothing more of it)."""
    _control("pause", direction, object, reason, config, wait)


@app.command()
def resume(direction: DirectionArg, object: ObjectOpt = None,
           reason: Annotated[str | None, typer.Option(help="Why.")] = None,
           wait: WaitOpt = 30.0, config: ConfigOpt = None) -> None:
    """Resume a paused direction (or object): what queued meanwhile flows, in order per record. Returns once
    every running sink of the direction took the resume."""
    _control("resume", direction, object, reason, config, wait)


def _when(ts: Any) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S") if ts is not None else "-"


def _print_json(data: Any) -> None:
    import json

    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
def status(config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Per direction: enabled or paused, last process time and status, records waiting, today's counts
    (successful, failed, filtered), open alerts."""
    from sfsync.operations.alerts import alert_cause, alert_direction, open_alerts, read_alerts
    from sfsync.operations.status import direction_summaries

    cfg = _load(config)
    try:
        alerts = open_alerts(read_alerts(cfg))
        per_direction: dict[Any, int] = {}
        for a in alerts:
            per_direction[alert_direction(a)] = per_direction.get(alert_direction(a), 0) + 1
        summaries = direction_summaries(cfg, open_alerts=per_direction)
    except Exception as e:  # KafkaException, a topic not read in time
        raise _kafka_down(cfg, e) from None
    if json_out:
        _print_json({"directions": [s.to_json() for s in summaries],
                     "open_alerts": [{"cause": alert_cause(a), "kind": a.kind.value, "severity": a.severity.value,
                                      "message": a.message, "ts": a.ts.isoformat()} for a in alerts]})
        return
    table = Table(title=f"sfsync status (today: {summaries[0].day}, {summaries[0].time_zone})")
    for col in ("direction", "state", "last process", "last status", "waiting", "today ok", "today failed",
                "today filtered", "open alerts"):
        table.add_column(col)
    for s in summaries:
        state = "[green]enabled[/]" if not s.paused else f"[yellow]paused[/] by {s.paused_by}" + (
            f" ({s.paused_reason})" if s.paused_reason else "")
        if s.paused_objects:
            state += f"; paused objects: {', '.join(s.paused_objects)}"
        table.add_row(f"{s.direction.value} ({s.sink} sink)", state, _when(s.last_process_time),
                      s.last_status.value if s.last_status else "-", "?" if s.waiting is None else str(s.waiting),
                      str(s.today_success), str(s.today_failed), str(s.today_filtered), str(s.open_alerts))
    console.print(table)
    for s in summaries:
        for problem in s.problems:
            console.print(f"[yellow]{s.direction.value}: {problem}[/]")
    for a in alerts:
        console.print(f"[red]open alert[/] {_when(a.ts)} {a.kind.value} ({alert_cause(a)}): {a.message}")


@app.command()
def queue(
    config: ConfigOpt = None,
    direction: Annotated[str | None, typer.Option(help="inbound | outbound")] = None,
    state: Annotated[str | None,
                     typer.Option(help="in_queue | success | failed | conflict | filtered | ambiguous")] = None,
    object: ObjectOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many rows, newest attempt first.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """The latest sync state of each record: Last Attempt, Queue ID, Record ID, Record Type, Sync Status,
    Failures, Last Error."""
    from sfsync.operations.status import queue as queue_rows
    from sfsync.operations.status import read_statuses
    from sfsync.records import SyncState

    cfg = _load(config)
    wanted_direction = _direction(direction) if direction else None
    try:
        wanted_state = SyncState(state.lower()) if state else None
    except ValueError:
        raise _fail(f"unknown state {state!r}; one of: {', '.join(s.value for s in SyncState)}", 2) from None
    try:
        statuses = read_statuses(cfg)
    except Exception as e:
        raise _kafka_down(cfg, e) from None
    rows = queue_rows(statuses, direction=wanted_direction, state=wanted_state, obj=object, limit=limit)
    if json_out:
        _print_json([{"last_attempt": r.last_attempt, "queue_id": r.queue_id, "record_id": r.record_id,
                      "record_type": r.record_type, "direction": r.direction.value,
                      "sync_status": r.sync_status.value, "failures": r.failures, "last_error": r.last_error}
                     for r in rows])
        return
    table = Table(title=f"sync queue ({len(rows)} row(s))")
    for col in ("Last Attempt", "Queue ID", "Record ID", "Record Type", "Sync Status", "Failures", "Last Error"):
        table.add_column(col, overflow="fold")
    labels = {SyncState.IN_QUEUE: "In Queue", SyncState.SUCCESS: "Success", SyncState.FAILED: "[red]Failed[/]",
              SyncState.CONFLICT: "[yellow]Conflict[/]", SyncState.FILTERED: "Filtered",
              SyncState.AMBIGUOUS: "[yellow]Ambiguous[/]", SyncState.SUPERSEDED: "Superseded"}
    for r in rows:
        table.add_row(_when(r.last_attempt), r.queue_id, r.record_id, r.record_type, labels[r.sync_status],
                      str(r.failures), r.last_error or "")
    console.print(table)


@app.command()
def audit(
    config: ConfigOpt = None,
    object: ObjectOpt = None,
    record: Annotated[str | None, typer.Option("--record",
                                               help="Record id: Salesforce id, local key or record key.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="At or after this time (ISO).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows, newest first.")] = 100,
    json_out: JsonOpt = False,
) -> None:
    """Losing changes (both values, the policy, the time) and ambiguous first-sync matches, newest first,
    from ``<schema>.sfsync_audit``. Exit 2 for an unknown object or a bad --since, 1 when the database
    cannot be read."""
    import psycopg

    from sfsync.operations.audit import AuditError, AuditFilter, read_audit

    cfg = _load(config)
    if object is not None and object not in cfg.objects:
        raise _fail(f"unknown object {object!r}; mapped objects: {', '.join(cfg.objects) or '(none)'}", 2)
    flt = AuditFilter(object=object, record=record, since=_parse_time(since, "--since"), limit=limit)
    try:
        rows = read_audit(cfg, flt)
    except AuditError as e:
        raise _fail(str(e), 1) from None
    except psycopg.Error as e:  # the message names host and port at most, never the password
        raise _fail(f"cannot read the audit from PostgreSQL: {type(e).__name__}: {str(e).strip()}", 1) from None
    if json_out:
        _print_json([r.to_json() for r in rows])
        return
    table = Table(title=f"audit ({len(rows)} row(s), newest first)")
    for col in ("Time", "Object", "Direction", "Record", "State", "Detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r.updated_ts.strftime("%Y-%m-%d %H:%M:%S"), r.object, r.direction,
                      r.sfid or r.local_key or r.record_key, r.state, r.detail or "")
    console.print(table)


dlq_app = typer.Typer(no_args_is_help=True, help="List, show, replay and purge dead letters.")
app.add_typer(dlq_app, name="dlq")


def _parse_time(value: str | None, what: str) -> Any:
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"{what}: not an ISO date/time (e.g. 2025-01-31 or 2025-01-31T08:00+01:00)", 2) from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _dlq_filter(sink: str | None, object: str | None, error: str | None, record: str | None, stage: str | None,
                since: str | None, until: str | None, ids: list[str] | None, include_all: bool) -> Any:
    from sfsync.kafka.topics import SINKS
    from sfsync.operations.dlq import DlqFilter, LetterState

    if sink is not None and sink not in SINKS:
        raise _fail(f"unknown sink {sink!r}; one of: {', '.join(SINKS)}", 2)
    states = frozenset(LetterState) if include_all else frozenset({LetterState.DEAD, LetterState.REPLAYED})
    return DlqFilter(sink=sink, object=object, error_class=error, record_id=record, stage=stage,
                     since=_parse_time(since, "--since"), until=_parse_time(until, "--until"),
                     ids=frozenset(ids) if ids else None, states=states)


SinkOpt = Annotated[str | None, typer.Option("--sink", help="postgres (inbound) | salesforce (outbound)")]
ErrorOpt = Annotated[str | None, typer.Option("--error", help="Error class/code, e.g. INVALID_FIELD.")]
RecordOpt = Annotated[str | None, typer.Option("--record", help="Record id: Salesforce id, local key or key.")]
StageOpt = Annotated[str | None, typer.Option("--stage", help="processor | <sink>-sink | <source>-producer")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="Last attempt at or after (ISO).")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Last attempt at or before (ISO).")]
IdsArg = Annotated[list[str] | None, typer.Argument(help="Dead letter ids (<sink>:<partition>:<offset>).")]


def _letters(cfg: SfsyncConfig, flt: Any) -> Any:
    from sfsync.operations.dlq import list_dead_letters

    try:
        return list_dead_letters(cfg, flt)
    except Exception as e:
        raise _kafka_down(cfg, e) from None


@dlq_app.command("list")
def dlq_list(config: ConfigOpt = None, sink: SinkOpt = None, object: ObjectOpt = None, error: ErrorOpt = None,
             record: RecordOpt = None, stage: StageOpt = None, since: SinceOpt = None, until: UntilOpt = None,
             include_all: Annotated[bool, typer.Option("--all", help="Purged ones too.")] = False,
             limit: Annotated[int, typer.Option(help="At most this many rows (newest last).")] = 200,
             json_out: JsonOpt = False) -> None:
    """Dead letters of every stage, with their error, attempts and state (dead / replayed / purged)."""
    cfg = _load(config)
    letters = _letters(cfg, _dlq_filter(sink, object, error, record, stage, since, until, None, include_all))
    shown = letters[-limit:]
    if json_out:
        _print_json([x.to_json() for x in shown])
        return
    more = f", last {limit}" if len(letters) > limit else ""
    table = Table(title=f"dead letters ({len(letters)} matching{more})")
    for col in ("id", "state", "stage", "object", "record", "error", "attempts", "last attempt", "message"):
        table.add_column(col, overflow="fold")
    for x in shown:
        table.add_row(x.id, x.state.value, x.info.stage, x.object or "-", x.record_id or "-", x.info.error_class,
                      str(x.info.attempt), _when(x.last_attempt), x.info.message[:200])
    console.print(table)


@dlq_app.command("show")
def dlq_show(ids: IdsArg = None, config: ConfigOpt = None, record: RecordOpt = None) -> None:
    """Everything about dead letters: headers, origin, values (as JSON)."""
    cfg = _load(config)
    if not ids and not record:
        raise _fail("name dead letter ids (see `sfsync dlq list`) or --record", 2)
    letters = _letters(cfg, _dlq_filter(None, None, None, record, None, None, None, ids, True))
    if not letters:
        raise _fail("no such dead letter", 1)
    _print_json([x.to_json() for x in letters])


def _selection(ids: list[str] | None, sink: str | None, object: str | None, error: str | None, record: str | None,
               stage: str | None, since: str | None, until: str | None, every: bool) -> Any:
    if not (ids or sink or object or error or record or stage or since or until or every):
        raise _fail("select what: dead letter ids, filters (--sink, --object, --error, --record, --stage, "
                    "--since, --until) or --every", 2)
    return _dlq_filter(sink, object, error, record, stage, since, until, ids, False)


EveryOpt = Annotated[bool, typer.Option("--every", help="Every dead letter (no filter).")]


@dlq_app.command("replay")
def dlq_replay(ids: IdsArg = None, config: ConfigOpt = None, sink: SinkOpt = None, object: ObjectOpt = None,
               error: ErrorOpt = None, record: RecordOpt = None, stage: StageOpt = None, since: SinceOpt = None,
               until: UntilOpt = None, every: EveryOpt = False,
               wait: Annotated[float, typer.Option(help="Seconds to wait for each record's new status "
                                                        "(0: do not wait).")] = 0.0,
               json_out: JsonOpt = False) -> None:
    """Send dead letters back through their sink with a fresh attempt count; report per record."""
    import time
    from datetime import UTC, datetime

    from rich.progress import Progress

    from sfsync.operations.dlq import LetterState, replay, wait_for_outcomes

    cfg = _load(config)
    flt = _selection(ids, sink, object, error, record, stage, since, until, every)
    letters = [x for x in _letters(cfg, flt) if x.state is LetterState.DEAD or ids]
    started = datetime.now(UTC)
    with Progress(console=console, transient=True, disable=len(letters) < 50 or json_out) as progress:
        task = progress.add_task("replaying", total=len(letters))
        try:
            outcomes = replay(cfg, letters, on_each=lambda _o: progress.advance(task))
        except Exception as e:
            raise _kafka_down(cfg, e) from None
    if wait > 0:
        outcomes = wait_for_outcomes(cfg, outcomes, started, wait, time.sleep)
    if json_out:
        _print_json([{"id": o.letter.id, "replayed": o.replayed, "detail": o.detail, "sent_to": o.sent_to,
                      "status": o.status.state.value if o.status else None} for o in outcomes])
    else:
        table = Table(title=f"replay: {sum(o.replayed for o in outcomes)} of {len(outcomes)} sent")
        for col in ("id", "record", "outcome", "status now"):
            table.add_column(col, overflow="fold")
        for o in outcomes:
            now = "-" if o.status is None else o.status.state.value + (
                f" ({o.status.last_error})" if o.status.last_error else "")
            table.add_row(o.letter.id, o.letter.record_id or "-", o.detail, now)
        console.print(table)
    if any(not o.replayed for o in outcomes):
        raise typer.Exit(1)


@dlq_app.command("purge")
def dlq_purge(ids: IdsArg = None, config: ConfigOpt = None, sink: SinkOpt = None, object: ObjectOpt = None,
              error: ErrorOpt = None, record: RecordOpt = None, stage: StageOpt = None, since: SinceOpt = None,
              until: UntilOpt = None, every: EveryOpt = False,
              yes: Annotated[bool, typer.Option("--yes", help="Really purge (required).")] = False) -> None:
    """Mark dead letters purged: hidden from `dlq list`, never replayed. Needs --yes."""
    from rich.progress import Progress

    from sfsync.operations.dlq import purge

    cfg = _load(config)
    flt = _selection(ids, sink, object, error, record, stage, since, until, every)
    letters = _letters(cfg, flt)
    if not yes:
        raise _fail(f"{len(letters)} dead letter(s) would be purged; add --yes to purge them", 2)
    with Progress(console=console, transient=True, disable=len(letters) < 50) as progress:
        task = progress.add_task("purging", total=len(letters))
        try:
            n = purge(cfg, letters, on_each=lambda _x: progress.advance(task))
        except Exception as e:
            raise _kafka_down(cfg, e) from None
    console.print(f"purged {n} dead letter(s)")


@app.command()
def alerts(config: ConfigOpt = None,
           open_only: Annotated[bool, typer.Option("--open", help="Only causes not resolved yet.")] = False,
           limit: Annotated[int, typer.Option(help="At most this many (newest last).")] = 100,
           json_out: JsonOpt = False) -> None:
    """Alerts on the alerts topic (all, or --open: the latest of each unresolved cause)."""
    from sfsync.operations.alerts import alert_cause, is_resolved, open_alerts, read_alerts

    cfg = _load(config)
    try:
        found = read_alerts(cfg)
    except Exception as e:
        raise _kafka_down(cfg, e) from None
    shown = (open_alerts(found) if open_only else found)[-limit:]
    if json_out:
        _print_json([{"alert_id": a.alert_id, "ts": a.ts.isoformat(), "kind": a.kind.value,
                      "severity": a.severity.value, "cause": alert_cause(a), "resolved": is_resolved(a),
                      "object": a.object, "message": a.message, "details": a.details} for a in shown])
        return
    table = Table(title=f"{'open ' if open_only else ''}alerts ({len(shown)})")
    for col in ("time", "kind", "severity", "cause", "state", "message"):
        table.add_column(col, overflow="fold")
    for a in shown:
        table.add_row(_when(a.ts), a.kind.value, a.severity.value, alert_cause(a),
                      "resolved" if is_resolved(a) else "open", a.message)
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
