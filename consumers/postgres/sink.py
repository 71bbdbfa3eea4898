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
- **Database unavailable** (cannot connect, connection lost, shutdown,
  resources, class 08/53/57/58): :class:`~consumers.base.SinkUnavailable` is
  raised and nothing of the batch is committed. Deadlocks and serialization
  failures (class 40) retry the whole transaction up to 3 times first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

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
from sfsync.database.capture import ORIGIN_MARKER, ORIGIN_SETTING
from sfsync.database.connect import connect
from sfsync.failures import Failure, FailureKind
from sfsync.records import AlertKind, ApplyCommand, Direction

log = logging.getLogger("sfsync.sink.postgres")

APPLICATION_NAME = "sfsync-postgres-sink"
TX_RETRIES = 3


class SchemaChanged(SinkUnavailable):
    """A mapped table, column or permission is missing (SQLSTATE class 42): every record would fail the same
    way, so the sink pauses with one alert and retries the batch, instead of dead-lettering everything."""

    alert_kind = AlertKind.SCHEMA_CHANGE

    def __init__(self, message: str, retry_after: float = 30.0) -> None:
        super().__init__(message, retry_after=retry_after, alert=True)


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

    def __init__(self, cfg: SfsyncConfig, *, retry_after: float = 2.0, connect_timeout: int = 5) -> None:
        self.cfg = cfg
        self.plans: dict[str, ObjectPlan] = object_plans(cfg)
        self._order = {name: i for i, name in enumerate(object_order(self.plans))}
        self.retry_after = retry_after
        self.connect_timeout = connect_timeout
        self.stats = SinkStats()
        self._conn: psycopg.Connection | None = None

    # ----------------------------------------------------------------- the Sink contract

    def write(self, batch: list[ApplyCommand]) -> list[Failure | None]:
        """Write the batch in one transaction; one result per command (``None`` = written).

        Raises :class:`SinkUnavailable` when the database cannot take the batch; then nothing of it committed.
        """
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

    def close(self) -> None:
        """Close the connection (idempotent)."""
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
            self._conn = connect(
                self.cfg, APPLICATION_NAME, autocommit=True, connect_timeout=self.connect_timeout
            )
        except psycopg.Error as e:
            raise SinkUnavailable(
                f"PostgreSQL unreachable: {e}".strip(), retry_after=self.retry_after,
                alert=(e.sqlstate or "").startswith("28"),
            ) from None
        return self._conn

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
                    raise SchemaChanged(f"PostgreSQL refuses writes to {plan.schema}.{plan.table}: SQLSTATE "
                                        f"{e.sqlstate} {primary} (a migration or a permission change? the sink "
                                        f"waits and retries the batch)") from None
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
