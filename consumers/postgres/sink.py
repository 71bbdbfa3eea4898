"""The PostgreSQL sink (``sfsync run postgres-sink``): apply commands -> mapped tables.

Implements :class:`consumers.base.Sink` (``name = "postgres"``). Contract:

- **One transaction per batch**, started with
  ``set_config('sfsync.origin', 'sfsync', true)`` so the capture triggers skip
  every write of it (no outbound echo).
- The batch is planned by :func:`consumers.postgres.plan.plan_batch`
  (collapsed per record key, order kept per record) and written in groups of
  the same object, operation and column set: one statement per group, its
  rows passed as one jsonb parameter. Referenced objects are upserted before
  the objects that reference them; deletes run children first.
- **Upsert**: a command with a local key updates the row with that key (and
  links it to the command's sfid) when that row exists and is unlinked or
  already holds that sfid; otherwise ``INSERT ... ON CONFLICT (sfid) DO
  UPDATE SET`` only the columns the command carries. Reference columns carry
  the referenced record's Salesforce id and are stored as that record's local
  key; a record whose referenced record has no local row yet fails with a
  transient ``REFERENCE_NOT_SYNCED`` (retried until the parent has arrived).
- **Delete** by the object's delete policy: ``propagate`` deletes the row by
  sfid, ``unlink`` sets its sfid to NULL, ``ignore`` writes nothing.
  Undelete is an upsert.
- **Values** (see :mod:`consumers.postgres.plan`): NUL characters are removed
  from strings (a warning names object, record and columns), ids are written in
  their 18-character form, and before a batch's statements a row holding the
  15-character form of an id the batch names (its records, their references)
  gets the 18-character form: the same record, never a duplicate row.
- **Isolation**: a statement that fails because of its data (SQLSTATE classes
  22 data exception, 23 integrity constraint, and other record-level
  classes) is rolled back to its savepoint and bisected until the failing
  record is alone; that record gets a permanent
  ``Failure("SQLSTATE <code>", "<schema.table>: <message> (column <c>)")``
  and every other record of the batch commits. Later commands of a failed
  record in the same batch fail with it (order is kept). Errors that concern
  the schema, not a record (class 42: missing table/column, permissions) raise
  :class:`SchemaChanged`: the sink pauses with a ``schema_change`` alert and
  retries the batch until the schema is repaired (nothing dead-lettered);
  class 0A (feature not supported) fails every record of the group.
- **Schema drift** (docs/schema-drift.md; rules in :mod:`consumers.drift`, durable state in
  :mod:`consumers.suspend`): an undefined column (SQLSTATE 42703) makes the sink read the table's columns
  from the catalog (one query); every mapped column it no longer lists is **suspended** (one
  ``schema_change`` alert naming the mapping entry and the column, a durable suspension record, direction
  inbound) and the batch is written again in the same :meth:`PostgresSink.write` without it. From then on
  suspended columns are stripped from every command and their values parked durably (acknowledged before
  ``write`` returns) for the records whose write succeeded. While something is suspended the sink reads the
  catalog once per interval (``salesforce.api_budget_retry_s``, the drift re-check interval of both sinks;
  a background thread, and before a write); a column that is back is resumed: the newest parked value per
  record is replayed through ``apply.local`` and the runner's version guard, the alert is resolved. An
  undefined column that is no mapped column (the key, the sfid column, a referenced table's), and a missing
  table, stay "schema changed" as above.
- **Database unavailable** (cannot connect, connection lost, shutdown,
  resources, class 08/53/57/58): :class:`~consumers.base.SinkUnavailable` is
  raised and nothing of the batch is committed. A refused login (class 28) at
  connect re-reads ``postgres.dsn`` from the role's config file
  (:mod:`sfsync.config.credentials`) and connects once more when it changed;
  else :class:`CredentialsRefused` (a ``credential_failure`` alert). Deadlocks and serialization
  failures (class 40) retry the whole transaction up to 3 times first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from consumers import drift
from consumers.base import CredentialsRefused as BaseCredentialsRefused
from consumers.base import SinkUnavailable
from consumers.postgres import statements
from consumers.postgres.plan import (
    BatchPlan,
    ObjectPlan,
    Op,
    OpKind,
    link_ops,
    nul_columns,
    object_order,
    object_plans,
    op_json,
    plan_batch,
    sfids_by_table,
)
from sfsync.config import DeletePolicy, SfsyncConfig
from sfsync.config.credentials import CredentialSource, postgres_credentials_refused, process_source
from sfsync.database.capture import ORIGIN_MARKER, ORIGIN_SETTING
from sfsync.database.connect import connect
from sfsync.failures import Failure, FailureKind
from sfsync.operations.alerts import resolved_alert
from sfsync.records import Alert, AlertKind, AlertSeverity, ApplyCommand, Direction, FieldPyValue

if TYPE_CHECKING:
    from consumers.suspend import DriftStore

log = logging.getLogger("sfsync.sink.postgres")

APPLICATION_NAME = "sfsync-postgres-sink"
TX_RETRIES = 3
#: write passes of one batch: each may suspend columns found gone and write the batch again
DRIFT_PASSES = 3
UNDEFINED_COLUMN = "42703"


class CredentialsRefused(BaseCredentialsRefused):
    """PostgreSQL refused the login (SQLSTATE class 28: 28P01 wrong password, 28000 no such role / no
    ``pg_hba.conf`` entry). The alert's cause is ``credential_failure:postgres`` whichever sink's runner
    raises it (the Salesforce sink's link-back and version store write PostgreSQL too)."""

    target = "postgres"


class SchemaChanged(SinkUnavailable):
    """A mapped table, column or permission is missing (SQLSTATE class 42): every record would fail the same
    way, so the sink pauses with one alert and retries the batch, instead of dead-lettering everything."""

    alert_kind = AlertKind.SCHEMA_CHANGE

    def __init__(self, message: str, retry_after: float = 30.0) -> None:
        super().__init__(message, retry_after=retry_after, alert=True)


class ColumnMissing(SchemaChanged):
    """A statement on ``plan``'s table named a column that does not exist (SQLSTATE 42703): maybe a mapped
    column was dropped (schema drift; :meth:`PostgresSink.write` reads the catalog and decides). Raised
    out of the batch's transaction, so nothing of it is committed."""

    def __init__(self, message: str, plan: ObjectPlan) -> None:
        super().__init__(message)
        self.plan = plan


def schema_changed(sqlstate: str | None, plan: ObjectPlan, message: str) -> SchemaChanged:
    """The exception for a class 42 error on ``plan``'s table: :class:`ColumnMissing` for 42703."""
    return ColumnMissing(message, plan) if sqlstate == UNDEFINED_COLUMN else SchemaChanged(message)


class ErrorScope(StrEnum):
    """What a PostgreSQL error says about the batch."""

    DATABASE = "database"  # the target is unavailable: raise SinkUnavailable, commit nothing
    TRANSACTION = "transaction"  # deadlock / serialization failure: run the whole batch again
    STATEMENT = "statement"  # the statement itself is wrong for every record (missing table, permission)
    RECORD = "record"  # one record's data: isolate it


def error_scope(sqlstate: str | None, connection_error: bool) -> ErrorScope:
    """Classify an error by SQLSTATE (pure). ``connection_error``: psycopg Operational/Interface error."""
    cls = (sqlstate or "")[:2]
    if cls in ("08", "53", "57", "58", "28") or sqlstate == "55P03" or (connection_error and not sqlstate):
        return ErrorScope.DATABASE
    if cls == "40":
        return ErrorScope.TRANSACTION
    if cls in ("42", "0A", "25", "XX"):
        return ErrorScope.STATEMENT if cls in ("42", "0A") else ErrorScope.DATABASE
    return ErrorScope.RECORD


def _scope(e: psycopg.Error) -> ErrorScope:
    return error_scope(e.sqlstate, isinstance(e, psycopg.OperationalError | psycopg.InterfaceError))


def failure_message(table: str, primary: str, column: str | None, detail: str | None) -> str:
    """``<table>: <message> (column <c>) — <detail>``; the column only when the message does not name it,
    the detail only when it is not the failing row's dump."""
    msg = f"{table}: {primary}"
    if column and f'"{column}"' not in primary:
        msg += f" (column {column})"
    if detail and not detail.startswith("Failing row contains"):
        msg += f" — {detail}"
    return msg


@dataclass
class SinkStats:
    """Counters since start (for tests, logs and metrics)."""

    batches: int = 0
    commands: int = 0
    failed: int = 0
    statements: int = 0
    bisections: int = 0
    transactions_retried: int = 0


class PostgresSink:
    """Writes apply commands to the mapped tables; see the module docstring for the contract."""

    name = "postgres"
    direction = Direction.INBOUND

    def __init__(self, cfg: SfsyncConfig, *, retry_after: float = 2.0, connect_timeout: int = 5,
                 drift_store: DriftStore | None = None, drift_recheck_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.plans: dict[str, ObjectPlan] = object_plans(cfg)
        self._order = {name: i for i, name in enumerate(object_order(self.plans))}
        self.retry_after = retry_after
        self.connect_timeout = connect_timeout
        self.stats = SinkStats()
        self._conn: psycopg.Connection | None = None
        #: where renewed credentials come from (the role's config file); None: never renewed
        self.credentials: CredentialSource | None = process_source()
        self._init_drift(drift_store, drift_recheck_s, clock)

    # ----------------------------------------------------------------- the Sink contract

    def write(self, batch: list[ApplyCommand]) -> list[Failure | None]:
        """Write the batch in one transaction; one result per command (``None`` = written); suspended
        columns stripped and parked, columns found gone suspended (module contract, schema drift).

        Raises :class:`SinkUnavailable` when the database cannot take the batch; then nothing of it committed.
        """
        with self._drift_busy():
            if self.suspended and self._clock() - self._last_recheck >= self._recheck_s:
                self._recheck()
            results = self._write_drifting(batch)
        self._ensure_recheck_thread()
        return results

    def _write_plain(self, batch: list[ApplyCommand]) -> list[Failure | None]:
        """Write the batch in one transaction, as it is (no drift handling)."""
        plan = plan_batch(batch, self.plans)
        for ops in plan.rounds:
            for op in ops:
                cleaned = nul_columns(op.values)
                if cleaned:
                    log.warning("%s %s: NUL characters removed from %s (PostgreSQL text cannot hold them)",
                                op.object, op.sfid or f"local key {op.local_key}", ", ".join(cleaned))
        results = self._execute(plan, len(batch))
        self.stats.batches += 1
        self.stats.commands += len(batch)
        self.stats.failed += sum(1 for r in results if r is not None)
        return results

    def write_back_sfids(self, pairs: Iterable[tuple[str, str, str]]) -> list[Failure | None]:
        """Record new Salesforce ids: ``(object, local_key, sfid)`` -> the row with that local key gets the sfid.

        Written as an sfsync write (origin marker set: no outbox row). A row that
        no longer exists is skipped (success); a sfid already held by another row
        fails that pair (SQLSTATE 23505). Raises :class:`SinkUnavailable` like :meth:`write`.
        """
        items = list(pairs)
        return self._execute(link_ops(items, self.plans), len(items))

    def probe(self) -> None:
        """Connect (or reuse the connection) and run ``SELECT 1``; raises :class:`SinkUnavailable` if that fails."""
        try:
            self._connection().execute("SELECT 1")
        except psycopg.Error as e:
            self.close()
            raise SinkUnavailable(f"PostgreSQL does not answer: {type(e).__name__}", retry_after=self.retry_after) \
                from None
        self._load_drift()  # the suspensions in force (schema drift): a restarted sink strips from its first batch
        self._ensure_recheck_thread()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._stop_drift()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # ----------------------------------------------------------------- transaction

    def _connection(self) -> psycopg.Connection:
        conn = self._conn
        if conn is not None and not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
            return conn
        self.close()
        try:
            try:
                self._conn = self._connect()
            except psycopg.Error as e:
                if not postgres_credentials_refused(e.sqlstate, str(e)) or not self._renew_credentials():
                    raise
                self._conn = self._connect()  # once more, with the renewed credentials
        except psycopg.Error as e:
            raise self._unavailable(e) from None
        return self._conn

    def _connect(self) -> psycopg.Connection:
        return connect(self.cfg, APPLICATION_NAME, autocommit=True, connect_timeout=self.connect_timeout)

    def _unavailable(self, e: psycopg.Error) -> SinkUnavailable:
        """A failed connect: :class:`CredentialsRefused` (an alert) when the login was refused."""
        if postgres_credentials_refused(e.sqlstate, str(e)):
            source = self.credentials
            return CredentialsRefused(f"PostgreSQL refused sfsync's credentials: {e}".strip(),
                                      retry_when=source.changed if source is not None else None)
        return SinkUnavailable(f"PostgreSQL unreachable: {e}".strip(), retry_after=self.retry_after)

    def _renew_credentials(self) -> bool:
        """Re-read ``postgres.dsn`` from the role's config file (into the role's config object, so every
        connection of the role uses it next); True when it changed."""
        return self.credentials is not None and self.credentials.renew(self.cfg, "postgres")

    def _execute(self, plan: BatchPlan, size: int) -> list[Failure | None]:
        results: list[Failure | None] = [None] * size
        for i, f in plan.failures.items():
            results[i] = f
        if not plan.rounds:
            return results
        attempts = 0
        while True:
            conn = self._connection()
            try:
                with conn.transaction():
                    conn.execute("SELECT set_config(%s, %s, true)", (ORIGIN_SETTING, ORIGIN_MARKER))
                    failed = self._apply(conn, plan)
                break
            except psycopg.Error as e:
                scope = _scope(e)
                if scope is ErrorScope.TRANSACTION and attempts < TX_RETRIES:
                    attempts += 1
                    self.stats.transactions_retried += 1
                    log.info("transaction retried after SQLSTATE %s", e.sqlstate)
                    continue
                if conn.closed or scope is ErrorScope.DATABASE:
                    self.close()
                raise SinkUnavailable(
                    f"PostgreSQL write failed ({scope.value}, SQLSTATE {e.sqlstate or '-'}): {e}".strip(),
                    retry_after=self.retry_after,
                ) from None
        for op, failure in failed:
            for i in op.indexes:
                results[i] = failure
        return results

    def _apply(self, conn: psycopg.Connection, plan: BatchPlan) -> list[tuple[Op, Failure]]:
        self._canonical_sfids(conn, plan)
        failed: list[tuple[Op, Failure]] = []
        failed_keys: dict[str, Failure] = {}
        for ops in plan.rounds:
            pending: list[Op] = []
            for op in ops:
                earlier = failed_keys.get(op.key)
                if earlier is None:
                    pending.append(op)
                else:
                    failed.append((op, Failure(
                        earlier.kind, earlier.error_class,
                        f"not applied: an earlier change of this record in the batch failed: {earlier.message}",
                    )))
            for kind, plan_, group in self._groups(pending):
                for op, failure in self._isolated(conn, kind, plan_, group):
                    failed.append((op, failure))
                    failed_keys.setdefault(op.key, failure)
        return failed

    def _canonical_sfids(self, conn: psycopg.Connection, plan: BatchPlan) -> None:
        """Give rows holding the 15-character form of an id the batch names its 18-character form (one
        statement per table, only for batches naming real ids). A record-level error here changes nothing
        (the batch's own statements report what is wrong); a schema error pauses the sink like theirs."""
        for name, ids in sfids_by_table((op for ops in plan.rounds for op in ops), self.plans).items():
            target = self.plans[name]
            try:
                with conn.transaction():
                    self._run_params(conn, statements.canonical_sfids(target), (ids,))
            except psycopg.Error as e:
                scope = _scope(e)
                if scope in (ErrorScope.DATABASE, ErrorScope.TRANSACTION):
                    raise
                if (e.sqlstate or "").startswith("42"):
                    raise SchemaChanged(f"PostgreSQL refuses writes to {target.schema}.{target.table}: SQLSTATE "
                                        f"{e.sqlstate} {e.diag.message_primary or str(e).strip()} (a migration "
                                        "or a permission change? the sink waits and retries the batch)") from None
                log.warning("stored 15-character ids of %s.%s not rewritten: SQLSTATE %s %s", target.schema,
                            target.table, e.sqlstate, e.diag.message_primary)

    def _groups(self, ops: list[Op]) -> list[tuple[OpKind, ObjectPlan, list[Op]]]:
        """Groups of one kind, object and column set: upserts/links parents first, then deletes children first."""
        groups: dict[tuple[OpKind, str, tuple[str, ...]], list[Op]] = {}
        for op in ops:
            groups.setdefault((op.kind, op.object, tuple(sorted(op.values))), []).append(op)
        writes = (OpKind.UPSERT, OpKind.LINK)

        def sort_key(k: tuple[OpKind, str, tuple[str, ...]]) -> tuple[int, int, tuple[str, ...]]:
            kind, obj, cols = k
            rank = self._order.get(obj, 0)
            return (0, rank, cols) if kind in writes else (1, -rank, cols)

        return [(k[0], self.plans[k[1]], groups[k]) for k in sorted(groups, key=sort_key)]

    # ----------------------------------------------------------------- isolation

    def _isolated(
        self, conn: psycopg.Connection, kind: OpKind, plan: ObjectPlan, ops: list[Op]
    ) -> list[tuple[Op, Failure]]:
        """Run a group in a savepoint; on a record error, bisect until the failing records are alone."""
        try:
            with conn.transaction():
                return self._run_group(conn, kind, plan, ops)
        except psycopg.Error as e:
            scope = _scope(e)
            if scope in (ErrorScope.DATABASE, ErrorScope.TRANSACTION):
                raise
            if scope is ErrorScope.STATEMENT:
                if (e.sqlstate or "").startswith("42"):
                    primary = e.diag.message_primary or str(e).strip()
                    raise schema_changed(e.sqlstate, plan, f"PostgreSQL refuses writes to {plan.schema}."
                                         f"{plan.table}: SQLSTATE {e.sqlstate} {primary} (a migration or a "
                                         f"permission change? the sink waits and retries the batch)") from None
                failure = self._failure(conn, e, plan, None)
                return [(op, failure) for op in ops]
            if len(ops) == 1:
                return [(ops[0], self._failure(conn, e, plan, ops[0]))]
            self.stats.bisections += 1
            mid = len(ops) // 2
            return self._isolated(conn, kind, plan, ops[:mid]) + self._isolated(conn, kind, plan, ops[mid:])

    def _failure(self, conn: psycopg.Connection, e: psycopg.Error, plan: ObjectPlan, op: Op | None) -> Failure:
        diag = e.diag
        primary = diag.message_primary or str(e).strip()
        column = diag.column_name
        if column is None and op is not None and (e.sqlstate or "").startswith("22"):
            column = self._probe(conn, plan, op)
        message = failure_message(f"{plan.schema}.{plan.table}", primary, column, diag.message_detail)
        log.warning("record failed: SQLSTATE %s %s", e.sqlstate, message)
        return Failure(FailureKind.PERMANENT, f"SQLSTATE {e.sqlstate or 'unknown'}", message)

    def _probe(self, conn: psycopg.Connection, plan: ObjectPlan, op: Op) -> str | None:
        """The first column of ``op`` whose value its column type rejects (for messages naming the column)."""
        row = op_json(op, plan)["row"]
        for column in sorted(row):
            try:
                with conn.transaction():
                    conn.execute(statements.probe_column(plan, column), (Jsonb({column: row[column]}),))
            except psycopg.Error as e:
                if _scope(e) is not ErrorScope.RECORD:
                    raise
                return column
        return None

    # ----------------------------------------------------------------- statements

    def _run_group(
        self, conn: psycopg.Connection, kind: OpKind, plan: ObjectPlan, ops: list[Op]
    ) -> list[tuple[Op, Failure]]:
        plans: Mapping[str, ObjectPlan] = self.plans
        if kind is OpKind.DELETE or kind is OpKind.UNLINK:
            render = statements.delete_by_sfid if kind is OpKind.DELETE else statements.unlink_by_sfid
            self._run(conn, render(plan, plans), [op_json(op, plan, with_key=False) for op in ops])
            return []
        if kind is OpKind.LINK:
            self._run(conn, statements.link_by_key(plan, plans), [op_json(op, plan) for op in ops])
            return []
        waiting = self._unresolved_references(conn, plan, ops, plans)
        if waiting:
            ops = [op for i, op in enumerate(ops) if i not in waiting]
            if not ops:
                return list(waiting.values())
        columns = sorted(ops[0].values)
        docs = [op_json(op, plan) for op in ops]
        remaining = list(range(len(ops)))
        keyed = [i for i in remaining if ops[i].local_key]
        if keyed:
            cur = self._run(conn, statements.update_by_key(plan, columns, plans), [docs[i] for i in keyed])
            matched = {keyed[int(row[0]) - 1] for row in cur.fetchall()}
            remaining = [i for i in remaining if i not in matched]
        unkeyed = [i for i in remaining if ops[i].sfid]
        if unkeyed and plan.delete_policy is DeletePolicy.UNLINK:
            cur = self._run(conn, statements.relink_unlinked(plan, columns, plans), [docs[i] for i in unkeyed])
            matched = {unkeyed[int(row[0]) - 1] for row in cur.fetchall()}
            remaining = [i for i in remaining if i not in matched]
        failures = [
            (ops[i], Failure(
                FailureKind.PERMANENT, "NoSalesforceId",
                f"{plan.schema}.{plan.table}: no row with {plan.local_key} = {ops[i].local_key} "
                f"and no Salesforce id to insert by",
            ))
            for i in remaining if not ops[i].sfid
        ]
        to_insert = [docs[i] for i in remaining if ops[i].sfid]
        if to_insert:
            self._run(conn, statements.insert_on_sfid(plan, columns, plans), to_insert)
        return failures + list(waiting.values())

    def _unresolved_references(self, conn: psycopg.Connection, plan: ObjectPlan, ops: list[Op],
                               plans: Mapping[str, ObjectPlan]) -> dict[int, tuple[Op, Failure]]:
        """Ops (by position) that reference a record with no local row yet: a transient
        ``REFERENCE_NOT_SYNCED`` (the parent may still be on its way; the runner retries the child)."""
        waiting: dict[int, tuple[Op, Failure]] = {}
        for column, ref in plan.references.items():
            wanted = {i: str(op.values[column]) for i, op in enumerate(ops)
                      if i not in waiting and op.values.get(column) not in (None, "")}
            if not wanted:
                continue
            target = plans[ref]
            cur = self._run_params(conn, statements.missing_sfids(target), (sorted(set(wanted.values())),))
            missing = {row[0] for row in cur.fetchall()}
            for i, sfid in wanted.items():
                if sfid in missing:
                    waiting[i] = (ops[i], Failure(
                        FailureKind.TRANSIENT, "REFERENCE_NOT_SYNCED",
                        f"{plan.schema}.{plan.table}.{column}: {ref} {sfid} has no local row yet "
                        f"({target.schema}.{target.table}); retried until it arrives"))
        return waiting

    def _run(self, conn: psycopg.Connection, query: sql.Composed, docs: list[dict[str, object]]) -> psycopg.Cursor:
        return self._run_params(conn, query, (Jsonb(docs),))

    def _run_params(self, conn: psycopg.Connection, query: sql.Composed, params: tuple[object, ...]) -> psycopg.Cursor:
        self.stats.statements += 1
        return conn.execute(query, params)

    # ----------------------------------------------------------------- schema drift (docs/schema-drift.md)

    def _init_drift(self, store: DriftStore | None, recheck_s: float | None, clock: Callable[[], float]) -> None:
        """What the sink writes per table, what is suspended, the durable store (made on first need: a sink
        that never drifts needs no broker), the re-check pace."""
        self._mapped = drift.mapped_targets(self.cfg, Direction.INBOUND)
        self.suspended: dict[tuple[str, str], drift.Suspension] = {}
        self._drift_store = store
        self._drift_loaded = False
        self._drift_lock = threading.RLock()
        self._drift_owner: int | None = None  # the thread doing drift work (see _stop_drift)
        self._clock = clock
        self._recheck_s = recheck_s if recheck_s is not None else float(self.cfg.salesforce.api_budget_retry_s)
        self._last_recheck = clock()
        self._recheck_stop = threading.Event()
        self._recheck_thread: threading.Thread | None = None

    @contextmanager
    def _drift_busy(self) -> Iterator[None]:
        """Hold the drift lock (writes and re-checks never interleave), marked as this thread's."""
        with self._drift_lock:
            outer, self._drift_owner = self._drift_owner, threading.get_ident()
            try:
                yield
            finally:
                self._drift_owner = outer

    def _store(self) -> DriftStore:
        if self._drift_store is None:
            from consumers.suspend import DriftStore

            self._drift_store = DriftStore(self.cfg, sink=self.name, direction=self.direction)
        return self._drift_store

    def _load_drift(self) -> None:
        """The suspensions in force (once per process: a restart keeps them); a column no longer mapped is
        left alone (its parked values stay parked)."""
        if self._drift_loaded:
            return
        with self._drift_lock:
            for (obj, column), record in self._store().load().items():
                mapped = self._mapped.get(obj, {}).get(column)
                if mapped is None:
                    log.warning("suspended column %s.%s is no longer mapped: its parked values stay parked",
                                obj, column)
                    continue
                self.suspended[(obj, column)] = drift.Suspension(mapped, record.reason or "")
            self._drift_loaded = True
        if self.suspended:
            log.warning("local columns suspended (schema drift): %s",
                        ", ".join(s.mapped.name for s in self.suspended.values()))

    def _suspended_columns(self, obj: str) -> frozenset[str]:
        if not self.suspended:
            return frozenset()
        return frozenset(c for (o, c) in self.suspended if o == obj)

    def _write_drifting(self, batch: list[ApplyCommand]) -> list[Failure | None]:
        """Write without the suspended columns; on an undefined column suspend the mapped columns the
        catalog no longer lists and write the batch again (the failed transaction committed nothing); park
        the values taken out of the commands that were written."""
        for attempt in range(DRIFT_PASSES + 1):
            stripped: list[ApplyCommand] = []
            taken: list[dict[str, FieldPyValue]] = []
            for command in batch:
                out_command, out = drift.strip(command, self._suspended_columns(command.object))
                stripped.append(out_command)
                taken.append(out)
            try:
                results = self._write_plain(stripped)
            except ColumnMissing as e:
                if attempt == DRIFT_PASSES or not self._detect(e.plan):
                    raise
                continue
            parked = [(key, drift.parked_command(batch[i], column, value))
                      for i, outcome in enumerate(results) if outcome is None
                      for column, value in taken[i].items()
                      if (key := drift.parked_key(self.direction, batch[i], column)) is not None]
            if parked:
                self._store().park(parked)
            return results
        raise AssertionError("unreachable")  # pragma: no cover

    def _catalog(self, tables: Iterable[str]) -> dict[str, set[str]]:
        """table -> its columns now (one query); a table that does not exist is absent."""
        schema = self.cfg.postgres.schema_name
        try:
            cur = self._run_params(self._connection(), statements.table_columns(), (schema, sorted(set(tables))))
            rows = cur.fetchall()
        except psycopg.Error as e:
            if _scope(e) is ErrorScope.DATABASE:
                self.close()
            raise SinkUnavailable(f"PostgreSQL catalog unreadable (SQLSTATE {e.sqlstate or '-'}): "
                                  f"{type(e).__name__}", retry_after=self.retry_after) from None
        out: dict[str, set[str]] = {}
        for table, column in rows:
            out.setdefault(str(table), set()).add(str(column))
        return out

    def _detect(self, plan: ObjectPlan) -> bool:
        """Suspend the mapped columns of ``plan``'s table the catalog no longer lists; True when the batch
        is worth writing again (something was newly suspended, or known from the control topic)."""
        present = self._catalog([plan.table]).get(plan.table)
        if not present:
            return False  # the table itself is gone (or unreadable): not column drift, the sink waits
        gone = drift.missing(self._mapped.get(plan.name, {}), present)
        stripped = set(self.suspended)  # what this pass already left out
        if gone and not self._drift_loaded:
            self._load_drift()  # suspended before this process started (or by a replica): no second alert
        found = False
        for mapped in gone:
            key = (plan.name, mapped.column)
            if key in stripped:
                continue  # already left out: the undefined column is another one
            if key not in self.suspended:
                self._suspend(mapped, plan)
            found = True
        return found

    def _suspend(self, mapped: drift.MappedField, plan: ObjectPlan) -> None:
        table = f"{plan.schema}.{plan.table}"
        suspension = drift.Suspension(mapped, drift.suspension_message(mapped, f"SQLSTATE {UNDEFINED_COLUMN}",
                                                                       table))
        alert = Alert(kind=AlertKind.SCHEMA_CHANGE, severity=AlertSeverity.CRITICAL, message=suspension.reason,
                      object=mapped.object,
                      details={"sink": self.name, "direction": self.direction.value,
                               "field": f"{mapped.object}.{mapped.field}", "column": mapped.column,
                               "table": table, "entry": mapped.entry,
                               "error_class": f"SQLSTATE {UNDEFINED_COLUMN}", "cause": suspension.cause})
        self._store().suspend(suspension, alert)
        self.suspended[(mapped.object, mapped.column)] = suspension
        self._last_recheck = self._clock()
        log.error("%s", suspension.reason)

    def _recheck(self) -> int:
        """Read the catalog of every table with a suspended column (one query); resume the columns that are
        back: replay their newest parked values, end the suspension, resolve the alert. Columns resumed."""
        self._last_recheck = self._clock()
        tables = {self.plans[obj].table for obj, _ in self.suspended if obj in self.plans}
        if not tables:
            return 0
        catalog = self._catalog(tables)
        resumed = 0
        for key, suspension in sorted(self.suspended.items()):
            m = suspension.mapped
            plan = self.plans.get(m.object)
            if plan is None or m.column not in catalog.get(plan.table, set()):
                continue
            store = self._store()
            parked = store.parked(m.object, m.column)
            records = len(drift.newest_per_record(parked.values(), self.direction))
            details = {"sink": self.name, "direction": self.direction.value, "column": m.column,
                       "table": f"{plan.schema}.{plan.table}", "entry": m.entry}
            replayed = store.resume(m, parked, resolved_alert(suspension.cause, AlertKind.SCHEMA_CHANGE,
                                                              drift.resumed_message(m, records), details,
                                                              obj=m.object))
            del self.suspended[key]
            resumed += 1
            log.warning("local column %s.%s is back: resumed, the newest values of %d record(s) replayed",
                        plan.table, m.column, replayed)
        return resumed

    def recheck(self) -> int:
        """Look now whether suspended columns are back (what the background thread does every interval)."""
        with self._drift_busy():
            return self._recheck() if self.suspended else 0

    def _ensure_recheck_thread(self) -> None:
        """A re-check thread runs while something is suspended (an idle sink still resumes)."""
        if not self.suspended or (self._recheck_thread is not None and self._recheck_thread.is_alive()
                                  and not self._recheck_stop.is_set()):
            return
        self._recheck_stop = stop = threading.Event()
        self._recheck_thread = threading.Thread(target=self._recheck_loop, args=(stop,), name="drift-recheck",
                                                daemon=True)
        self._recheck_thread.start()

    def _recheck_loop(self, stop: threading.Event) -> None:
        while not stop.wait(min(self._recheck_s, 5.0)):
            with self._drift_busy():
                if stop.is_set():
                    return
                if not self.suspended:
                    return
                if self._clock() - self._last_recheck < self._recheck_s:
                    continue
                try:
                    self._recheck()
                except SinkUnavailable as e:  # the database or the broker: the next interval tries again
                    log.warning("drift re-check postponed: %s", e)
                except Exception:
                    log.exception("drift re-check failed; trying again next interval")

    def _stop_drift(self) -> None:
        """On :meth:`close`: stop the re-check thread (a later write or probe starts one again while
        something is suspended) and flush the drift store. Not when the connection is closed to reconnect
        in the middle of drift work (a write or a re-check of this thread): the thread stays."""
        if self._drift_owner == threading.get_ident():
            return
        with self._drift_lock:
            self._recheck_stop.set()
            self._recheck_thread = None
        if self._drift_store is not None:
            self._drift_store.close()
