"""``SalesforceSink``: the :class:`consumers.base.Sink` that writes apply commands with sObject Collections.

Contract (on top of :mod:`consumers.base`):

- Creates/updates: ``PATCH composite/sobjects/{Object}/{externalIdField}`` with ``allOrNone=false``, up
  to 200 records per call, each ``{"attributes": {"type"}, <externalIdField>: local_key, ...values}`` —
  a retried create never duplicates. Deletes: ``DELETE composite/sobjects?ids=...&allOrNone=false``; a
  delete without sfid is looked up by external id (queryAll: an already deleted record is a success;
  no record at all is a permanent ``NOT_FOUND`` failure). A delete of an already deleted record succeeds.
- Reference fields (mapping ``reference: <Object>``) carry the referenced record's LOCAL key; the sink
  resolves it to an sfid (cache filled by its own upserts, else one SOQL query per referenced object and
  call). Not found -> transient ``REFERENCE_NOT_SYNCED`` (the parent may still be on its way).
- Per record: success -> ``None`` (and ``(object, local_key, sfid)`` is kept for
  :meth:`SalesforceSink.take_created_ids` when the record was created or its command did not carry
  its sfid: :mod:`consumers.salesforce.links` writes those links before the batch counts as done);
  failure -> :class:`Failure` classified by :mod:`consumers.salesforce.errors`. A whole call failing
  (5xx, timeout, connection loss, a call-level error) -> every record of that call gets that failure.
- ``INVALID_SESSION_ID``: :class:`SalesforceClient` re-authenticates once and repeats the call; a refused
  (re-)authentication re-reads the credentials (:mod:`sfsync.config.credentials`: the ``salesforce.auth``
  block of the config file the role was started with) and, when they changed, repeats the call once with
  them; else it raises :class:`CredentialsRefused` (a ``SinkUnavailable`` with ``alert=True``, whose
  ``retry_when`` tells the runner to retry at once when the config file changes).
- API budget: before every call the last ``Sforce-Limit-Info`` reading and ``salesforce.api_budget_share``
  decide (:mod:`sfsync.salesforce.budget`) to go, sleep, or raise :class:`BudgetExhausted`
  (``SinkUnavailable`` with ``retry_after``) — before the share is used, never after. While stopped,
  one ``GET limits`` per ``salesforce.api_budget_retry_s`` reads the budget again (a new day).
- Every request carries ``Sforce-Call-Options: client=<salesforce.call_options_client>``.
- ``sync_metadata.salesforce_field`` (when configured) gets the write's time on every record of an upsert call
  (same call; the field is never mapped, so its CDC echo maps to nothing).
- Schema drift (docs/schema-drift.md; pure rules in :mod:`consumers.salesforce.drift`, durable state in
  :mod:`consumers.salesforce.suspend`): a record failing ``INVALID_FIELD``/``INVALID_TYPE`` makes the sink
  describe the object (one call); every mapped field the describe no longer lists is **suspended** (one
  ``schema_change`` alert naming the mapping entry and the field, a durable suspension record) and the
  failed records are written again in the same :meth:`SalesforceSink.write` without it, so none is
  dead-lettered for it. From then on suspended fields are stripped from every command and their values
  parked durably (acknowledged before ``write`` returns) for the records whose write succeeded. Once per
  ``salesforce.api_budget_retry_s`` (a background thread, and before a write) the sink describes each
  object with a suspended field (one call each, through the API budget); a field that is back is resumed:
  its parked values are replayed through the apply topic and the runner's version guard, the alert is
  resolved. :meth:`SalesforceSink.probe` loads the suspensions in force (a restart keeps them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import requests
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

from consumers.base import CredentialsRefused as BaseCredentialsRefused
from consumers.base import SinkUnavailable
from consumers.salesforce import drift
from consumers.salesforce.plan import (
    Call,
    Entry,
    UnresolvedReference,
    call_failure,
    plan,
    record_outcome,
    upsert_body,
)
from sfsync.config import SfsyncConfig
from sfsync.config.credentials import CredentialSource, process_source
from sfsync.failures import Failure, FailureKind
from sfsync.operations.alerts import resolved_alert
from sfsync.records import Alert, AlertKind, AlertSeverity, ApplyCommand, Direction, FieldPyValue
from sfsync.salesforce.auth import AuthenticationFailed
from sfsync.salesforce.budget import BudgetDecision, Pace, decide
from sfsync.salesforce.rest import SalesforceClient
from sfsync.salesforce.soql import soql_string
from sfsync.salesforce.values import to_json_value

if TYPE_CHECKING:
    from consumers.salesforce.suspend import DriftStore

log = logging.getLogger("sfsync.consumers.salesforce")

IN_CHUNK = 200
#: write passes of one batch: each may suspend fields found gone and write the records that failed again
DRIFT_PASSES = 3


class CredentialsRefused(BaseCredentialsRefused):
    """Salesforce refused sfsync's credentials (after one re-authentication)."""


class BudgetExhausted(SinkUnavailable):
    """The next call would pass sfsync's share of the daily API allowance: wait, keep the batch."""

    alert_kind = AlertKind.API_BUDGET

    def __init__(self, message: str, retry_after: float = 60.0) -> None:
        super().__init__(message, retry_after=retry_after, alert=True)


class _CallFailed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class SalesforceSink:
    """Writes batches of apply commands to Salesforce (see module contract). Not thread-safe."""

    name = "salesforce"
    direction = Direction.OUTBOUND

    def __init__(
        self,
        cfg: SfsyncConfig,
        client: SalesforceClient | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        budget_slow_from: float = 0.8,
        budget_max_delay_s: float = 2.0,
        budget_retry_after_s: float | None = None,
        drift_store: DriftStore | None = None,
        drift_recheck_s: float | None = None,
        credentials: CredentialSource | None = None,
    ) -> None:
        self.cfg = cfg
        self.client = client or SalesforceClient(cfg.salesforce)
        #: where renewed credentials come from (the role's config file); None: never renewed
        self.credentials = credentials if credentials is not None else process_source()
        self._sleep = sleep
        self._clock = clock
        self._stopped_since: float | None = None
        self._slow_from = budget_slow_from
        self._max_delay = budget_max_delay_s
        self._retry_after = (budget_retry_after_s if budget_retry_after_s is not None
                             else float(cfg.salesforce.api_budget_retry_s))
        self._created: list[tuple[str, str, str]] = []
        self._created_lock = threading.Lock()
        self._ids: dict[tuple[str, str], str] = {}  # (object, local key) -> sfid
        self.references: dict[str, dict[str, str]] = {
            name: {f.field: f.reference for f in obj.fields if f.reference}
            for name, obj in cfg.objects.items()
        }
        self._referenced = frozenset(t for refs in self.references.values() for t in refs.values())
        self.calls = 0
        self.throttled_s = 0.0
        # schema drift (module contract): what the sink writes, what is suspended, the durable store
        self._lock = threading.RLock()
        self._mapped = drift.outbound_fields(cfg)
        self.suspended: dict[tuple[str, str], drift.Suspension] = {}
        self._drift_store = drift_store  # made on first need (a sink that never drifts needs no broker)
        self._drift_loaded = False
        self._recheck_s = drift_recheck_s if drift_recheck_s is not None else float(cfg.salesforce.api_budget_retry_s)
        self._last_recheck = clock()
        self._recheck_stop = threading.Event()
        self._recheck_thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"SalesforceSink({self.client!r})"

    # ------------------------------------------------------------------ Sink
    def write(self, batch: list[ApplyCommand]) -> list[Failure | None]:
        """One outcome per command, in order (see module contract, schema drift included)."""
        with self._lock:
            if self.suspended and self._clock() - self._last_recheck >= self._recheck_s:
                self._recheck()
            return self._write_drifting(batch)

    def _write_drifting(self, batch: list[ApplyCommand]) -> list[Failure | None]:
        """Write without the suspended fields; suspend the fields found gone and write their records again;
        park the values taken out of the commands that were written."""
        results: list[Failure | None] = [None] * len(batch)
        taken: list[dict[str, FieldPyValue]] = [{} for _ in batch]
        pending = list(range(len(batch)))
        described: set[str] = set()  # one describe per object and write
        for _ in range(DRIFT_PASSES):
            to_write: list[int] = []
            stripped: list[ApplyCommand] = []
            for i in pending:
                command, out = drift.strip(batch[i], self._suspended_fields(batch[i].object))
                taken[i] = out
                if out and not command.values:
                    results[i] = None  # every value it carries is suspended: nothing to write now
                    continue
                to_write.append(i)
                stripped.append(command)
            for i, outcome in zip(to_write, self._write_plain(stripped), strict=True):
                results[i] = outcome
            drifted = {batch[i].object for i in to_write if drift.drift_candidate(results[i])} - described
            newly = self._detect(drifted) if drifted else set()
            described |= drifted
            pending = [i for i in to_write if drift.drift_candidate(results[i]) and batch[i].object in newly]
            if not pending:
                break
        parked = [(key, drift.parked_command(batch[i], f, v))
                  for i in range(len(batch)) if results[i] is None
                  for f, v in taken[i].items()
                  if (key := drift.parked_key(self.direction, batch[i], f)) is not None]
        if parked:
            self._store().park(parked)
        return results

    def _write_plain(self, batch: list[ApplyCommand]) -> list[Failure | None]:
        results: list[Failure | None] = [None] * len(batch)
        work = plan(batch, self._external_id_field, self._referenced)
        for i, failure in work.failures.items():
            results[i] = failure
        if work.call_count:
            self._gate(work.call_count, whole_batch=True)
        for calls in work.rounds:
            for call in calls:
                try:
                    outcomes = self._run(call)
                except _CallFailed as e:
                    outcomes = [e.failure] * len(call.entries)
                for entry, outcome in zip(call.entries, outcomes, strict=True):
                    for i in entry.indexes:
                        results[i] = outcome
        return results

    def take_created_ids(self) -> list[tuple[str, str, str]]:
        """``(object, local_key, sfid)`` of records created (or newly linked) since the last call."""
        with self._created_lock:
            out, self._created = self._created, []
        return out

    def probe(self) -> None:
        """Authenticate (an OAuth token request, not a data API call); refused credentials or no answer raise."""
        try:
            try:
                _ = self.client.sf
            except AuthenticationFailed as e:
                if not self._renew_credentials():
                    raise self._refused(f"{e.error}: {e.description}") from None
                _ = self.client.sf
        except AuthenticationFailed as e:
            raise self._refused(f"{e.error}: {e.description}") from None
        except requests.RequestException as e:
            raise SinkUnavailable(f"Salesforce unreachable: {type(e).__name__}", retry_after=2.0) from None
        self._load_drift()
        if self._recheck_thread is None:
            self._recheck_thread = threading.Thread(target=self._recheck_loop, name="drift-recheck", daemon=True)
            self._recheck_thread.start()

    def close(self) -> None:
        self._recheck_stop.set()
        if self._recheck_thread is not None:
            self._recheck_thread.join(30)
        if self._drift_store is not None:
            self._drift_store.close()
        self.client.close()

    # ------------------------------------------------------------------ schema drift
    def _store(self) -> DriftStore:
        if self._drift_store is None:
            from consumers.salesforce.suspend import DriftStore

            self._drift_store = DriftStore(self.cfg)
        return self._drift_store

    def _load_drift(self) -> None:
        """The suspensions in force (a restart keeps them); a field no longer mapped is left alone."""
        if self._drift_loaded:
            return
        with self._lock:
            for (obj, name), record in self._store().load().items():
                mapped = self._mapped.get(obj, {}).get(name.lower())
                if mapped is None:
                    log.warning("suspended field %s.%s is no longer mapped: its parked values stay parked", obj, name)
                    continue
                self.suspended[(obj, mapped.field)] = drift.Suspension(mapped, record.reason or "")
            self._drift_loaded = True
        if self.suspended:
            log.warning("Salesforce fields suspended (schema drift): %s",
                        ", ".join(s.mapped.name for s in self.suspended.values()))

    def _suspended_fields(self, sobject: str) -> frozenset[str]:
        if not self.suspended:
            return frozenset()
        return frozenset(f for (o, f) in self.suspended if o == sobject)

    def _describe_fields(self, sobject: str) -> set[str] | None:
        """The field names the org's describe lists for ``sobject`` (one API call); ``None`` when the
        describe itself failed (the object is not there either: not field drift, the failures stand)."""
        self._gate(1)
        try:
            answer = self._guard(lambda: self.client.describe(sobject))
        except _CallFailed as e:
            log.warning("describe %s failed (%s: %s)", sobject, e.failure.error_class, e.failure.message)
            return None
        return {str(f.get("name")) for f in answer.get("fields", []) if isinstance(f, dict)}

    def _detect(self, objects: set[str]) -> set[str]:
        """Suspend the mapped fields of ``objects`` the describe no longer lists; the objects that got any."""
        out: set[str] = set()
        for sobject in sorted(objects):
            mapped = self._mapped.get(sobject)
            if not mapped:
                continue
            present = self._describe_fields(sobject)
            if present is None:
                continue
            gone = drift.missing(mapped, present)
            if gone and not self._drift_loaded:
                self._load_drift()  # suspended before this process started: no second alert
            for m in gone:
                if (sobject, m.field) in self.suspended:
                    out.add(sobject)  # known already (another replica, an earlier run): write again without it
                    continue
                self._suspend(m, "INVALID_FIELD")
                out.add(sobject)
        return out

    def _suspend(self, mapped: drift.MappedField, error_class: str) -> None:
        suspension = drift.Suspension(mapped, drift.suspension_message(mapped, error_class))
        alert = Alert(kind=AlertKind.SCHEMA_CHANGE, severity=AlertSeverity.CRITICAL, message=suspension.reason,
                      object=mapped.object,
                      details={"sink": self.name, "direction": self.direction.value, "field": mapped.name,
                               "entry": mapped.entry, "column": mapped.column, "error_class": error_class,
                               "cause": suspension.cause})
        self._store().suspend(suspension, alert)
        self.suspended[(mapped.object, mapped.field)] = suspension
        self._last_recheck = self._clock()
        log.error("%s", suspension.reason)

    def _recheck(self) -> int:
        """Describe every object with a suspended field; resume the fields that are back. Fields resumed."""
        self._last_recheck = self._clock()
        resumed = 0
        for sobject in sorted({o for o, _ in self.suspended}):
            present = self._describe_fields(sobject)
            if present is None:
                continue
            lowered = {f.lower() for f in present}
            for key, suspension in sorted(self.suspended.items()):
                if key[0] != sobject or key[1].lower() not in lowered:
                    continue
                m = suspension.mapped
                store = self._store()
                parked = store.parked(m.object, m.field)
                records = len(drift.newest_per_record(parked.values()))
                details = {"sink": self.name, "direction": self.direction.value, "field": m.name, "entry": m.entry}
                replayed = store.resume(m, parked, resolved_alert(
                    suspension.cause, AlertKind.SCHEMA_CHANGE,
                    f"Salesforce field {m.name} (mapping entry {m.entry}) is back: the suspended changes of "
                    f"{records} record(s) replayed", details, obj=m.object))
                del self.suspended[key]
                resumed += 1
                log.warning("Salesforce field %s is back: resumed, the newest values of %d record(s) replayed",
                            m.name, replayed)
        return resumed

    def recheck(self) -> int:
        """Look now whether suspended fields are back (what the background thread does every interval)."""
        with self._lock:
            return self._recheck() if self.suspended else 0

    def _recheck_loop(self) -> None:
        while not self._recheck_stop.wait(min(self._recheck_s, 5.0)):
            if not self.suspended or self._clock() - self._last_recheck < self._recheck_s:
                continue
            try:
                self.recheck()
            except SinkUnavailable as e:  # budget spent, credentials, broker: the next interval tries again
                log.warning("drift re-check postponed: %s", e)
            except Exception:
                log.exception("drift re-check failed; trying again next interval")

    # ------------------------------------------------------------------ calls
    def _external_id_field(self, sobject: str) -> str:
        mapping = self.cfg.objects.get(sobject)
        return mapping.external_id_field if mapping else "Local_Id__c"

    def _run(self, call: Call) -> list[Failure | None]:
        if call.op == "delete":
            return self._delete(call)
        return self._upsert(call)

    def _upsert(self, call: Call) -> list[Failure | None]:
        outcomes: list[Failure | None] = [None] * len(call.entries)
        refs = self.references.get(call.object, {})
        if refs:
            self._prefetch_references(call, refs)
        records: list[dict[str, Any]] = []
        sent: list[int] = []
        for n, entry in enumerate(call.entries):
            try:
                records.append(upsert_body(call, entry, refs, self._known_id, self._external_id_field(call.object)))
                sent.append(n)
            except UnresolvedReference as e:
                outcomes[n] = Failure(FailureKind.TRANSIENT, "REFERENCE_NOT_SYNCED", str(e))
        if not records:
            return outcomes
        self._stamp_sync_time(call.object, records)
        answer = self._request(f"composite/sobjects/{call.object}/{call.key_field}", "PATCH",
                               json={"allOrNone": False, "records": records})
        results = answer if isinstance(answer, list) else []
        for pos, n in enumerate(sent):
            result = results[pos] if pos < len(results) else None
            outcome = record_outcome(result, "upsert")
            outcomes[n] = outcome
            if outcome is None and result is not None:
                self._remember(call.object, call.entries[n], str(result.get("id") or ""),
                               bool(result.get("created")))
        return outcomes

    def _stamp_sync_time(self, sobject: str, records: list[dict[str, Any]]) -> None:
        """``sync_metadata.salesforce_field`` = this write's time on every record of the call (same call, no
        extra API call; not a mapped field, so its CDC echo carries nothing the processor maps)."""
        mapping = self.cfg.objects.get(sobject)
        meta = mapping.sync_metadata if mapping is not None else None
        if meta is not None:
            now = to_json_value(datetime.now(UTC))
            for record in records:
                record[meta.salesforce_field] = now

    def _remember(self, sobject: str, entry: Entry, sfid: str, created: bool) -> None:
        if not sfid or entry.local_key is None:
            return
        self._ids[(sobject, entry.local_key)] = sfid
        # Every write whose command did not carry the sfid queues the link, even when this sink already
        # knows the id: a repeated batch (the link write failed) must write the link again.
        if created or entry.sfid != sfid:
            with self._created_lock:
                self._created.append((sobject, entry.local_key, sfid))

    def _delete(self, call: Call) -> list[Failure | None]:
        outcomes: list[Failure | None] = [None] * len(call.entries)
        missing = [e.local_key for e in call.entries if not e.sfid and e.local_key is not None]
        found: dict[str, tuple[str, bool]] = {}
        if missing:
            found = self._lookup(call.object, missing, include_deleted=True)
        ids: list[str] = []
        sent: list[int] = []
        for n, entry in enumerate(call.entries):
            sfid = entry.sfid
            if not sfid and entry.local_key is not None:
                hit = found.get(entry.local_key)
                if hit is None:
                    outcomes[n] = Failure(FailureKind.PERMANENT, "NOT_FOUND",
                                          f"no {call.object} record with {self._external_id_field(call.object)}"
                                          f" = {entry.local_key!r} to delete")
                    continue
                sfid, deleted = hit
                if deleted:
                    continue  # already in the recycle bin
            if sfid:
                ids.append(sfid)
                sent.append(n)
        if not ids:
            return outcomes
        answer = self._request("composite/sobjects", "DELETE",
                               params={"ids": ",".join(ids), "allOrNone": "false"})
        results = answer if isinstance(answer, list) else []
        for pos, n in enumerate(sent):
            outcomes[n] = record_outcome(results[pos] if pos < len(results) else None, "delete")
            entry = call.entries[n]
            if outcomes[n] is None and entry.local_key is not None:
                self._ids.pop((call.object, entry.local_key), None)
        return outcomes

    # ------------------------------------------------------------------ references
    def _known_id(self, sobject: str, local_key: str) -> str | None:
        return self._ids.get((sobject, local_key))

    def _prefetch_references(self, call: Call, refs: dict[str, str]) -> None:
        wanted: dict[str, set[str]] = {}
        for entry in call.entries:
            for field_name, target in refs.items():
                value = entry.values.get(field_name)
                if value is None or value == "":
                    continue
                if (target, str(value)) not in self._ids:
                    wanted.setdefault(target, set()).add(str(value))
        for target, keys in wanted.items():
            for key, (sfid, deleted) in self._lookup(target, sorted(keys), include_deleted=False).items():
                if not deleted:
                    self._ids[(target, key)] = sfid

    def _lookup(self, sobject: str, local_keys: list[str], include_deleted: bool) -> dict[str, tuple[str, bool]]:
        """local key -> (sfid, is deleted) for the records found by external id."""
        ext = self._external_id_field(sobject)
        out: dict[str, tuple[str, bool]] = {}
        lowered = {k.lower(): k for k in local_keys}
        for start in range(0, len(local_keys), IN_CHUNK):
            chunk = local_keys[start:start + IN_CHUNK]
            soql = (f"SELECT Id, IsDeleted, {ext} FROM {sobject} WHERE {ext} IN "
                    f"({', '.join(soql_string(k) for k in chunk)})")
            self._gate(1)
            rows: list[dict[str, Any]] = self._guard(
                partial(self.client.query_records, soql, include_deleted=include_deleted))
            for row in rows:
                raw = row.get(ext)
                if raw is None:
                    continue
                key = str(raw)
                key = key if key in out or key in local_keys else lowered.get(key.lower(), key)
                deleted = bool(row.get("IsDeleted"))
                if key not in out or out[key][1]:  # prefer a live record over a deleted one
                    out[key] = (str(row["Id"]), deleted)
        return out

    # ------------------------------------------------------------------ transport
    def _request(self, path: str, method: str, **kwargs: Any) -> Any:
        self._gate(1)
        return self._guard(lambda: self.client.restful(path, method=method, **kwargs))

    def _refused(self, detail: str) -> CredentialsRefused:
        source = self.credentials
        return CredentialsRefused(f"Salesforce refused sfsync's credentials: {detail}",
                                  retry_when=source.changed if source is not None else None)

    def _renew_credentials(self) -> bool:
        """Re-read ``salesforce.auth`` from the role's config file; True (and a fresh login next) when it
        changed. Nothing changed, no file, an invalid file: False (the outage goes on)."""
        if self.credentials is None or not self.credentials.renew(self.cfg, "salesforce"):
            return False
        self.client.drop_session()
        return True

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run one API call; map whole-call errors (see module contract). Refused credentials are re-read
        and, when they changed, the call is made once more with them."""
        try:
            return self._guard_once(fn)
        except CredentialsRefused:
            if not self._renew_credentials():
                raise
        return self._guard_once(fn)

    def _guard_once(self, fn: Callable[[], Any]) -> Any:
        self.calls += 1
        try:
            return fn()
        except AuthenticationFailed as e:
            raise self._refused(f"{e.error}: {e.description}") from None
        except SalesforceExpiredSession:
            raise self._refused("session still invalid after re-authentication") from None
        except SalesforceError as e:
            code, message = _error_of(e)
            if code == "REQUEST_LIMIT_EXCEEDED":
                raise BudgetExhausted(f"Salesforce API limit reached: {message}", self._retry_after) from None
            raise _CallFailed(call_failure(code, message, e.status)) from None
        except requests.Timeout:
            raise _CallFailed(Failure(FailureKind.TRANSIENT, "TIMEOUT", "the Salesforce call timed out")) from None
        except requests.RequestException as e:
            raise _CallFailed(Failure(FailureKind.TRANSIENT, "CONNECTION_ERROR",
                                      f"the Salesforce call failed: {type(e).__name__}")) from None

    def _decide(self, calls: int) -> BudgetDecision:
        return decide(self.client.usage(), self.cfg.salesforce.api_budget_share, calls,
                      slow_from=self._slow_from, max_delay_s=self._max_delay, retry_after_s=self._retry_after)

    def _gate(self, calls: int, whole_batch: bool = False) -> None:
        """Apply the API budget before ``calls`` more calls (sleep or raise :class:`BudgetExhausted`).

        The reading comes from the last response. A stopped sink makes no calls, so once per retry
        interval it spends one ``GET limits`` to read the budget again (a new day, a raised limit).
        """
        decision = self._decide(calls)
        if decision.pace is Pace.STOP:
            now = self._clock()
            if self._stopped_since is None:
                self._stopped_since = now
            elif now - self._stopped_since >= self._retry_after:
                self._stopped_since = now
                self._guard(lambda: self.client.restful("limits"))
                decision = self._decide(calls)
        if decision.pace is not Pace.STOP:
            self._stopped_since = None
        if decision.pace is Pace.STOP:
            raise BudgetExhausted(
                f"sfsync's API budget is spent: {decision.used} of {decision.allowed} allowed daily calls used "
                f"({self.cfg.salesforce.api_budget_share:.0%} share), {calls} more needed",
                decision.retry_after_s,
            )
        if decision.pace is Pace.SLOW and not whole_batch:
            self.throttled_s += decision.delay_s
            self._sleep(decision.delay_s)


def _error_of(e: SalesforceError) -> tuple[str, str]:
    content = e.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        return str(first.get("errorCode") or f"HTTP_{e.status}"), str(first.get("message") or "")
    if e.status >= 500:
        return "HTTP_5XX", f"HTTP {e.status} from Salesforce"
    return f"HTTP_{e.status}", f"HTTP {e.status} from Salesforce"
