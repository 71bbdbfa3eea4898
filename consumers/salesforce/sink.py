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
  (re-)authentication raises :class:`CredentialsRefused` (a ``SinkUnavailable`` with ``alert=True``).
- API budget: before every call the last ``Sforce-Limit-Info`` reading and ``salesforce.api_budget_share``
  decide (:mod:`sfsync.salesforce.budget`) to go, sleep, or raise :class:`BudgetExhausted`
  (``SinkUnavailable`` with ``retry_after``) — before the share is used, never after. While stopped,
  one ``GET limits`` per ``salesforce.api_budget_retry_s`` reads the budget again (a new day).
- Every request carries ``Sforce-Call-Options: client=<salesforce.call_options_client>``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import requests
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

from consumers.base import SinkUnavailable
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
from sfsync.failures import Failure, FailureKind
from sfsync.records import AlertKind, ApplyCommand, Direction
from sfsync.salesforce.auth import AuthenticationFailed
from sfsync.salesforce.budget import BudgetDecision, Pace, decide
from sfsync.salesforce.rest import SalesforceClient
from sfsync.salesforce.soql import soql_string

log = logging.getLogger("sfsync.consumers.salesforce")

IN_CHUNK = 200


class CredentialsRefused(SinkUnavailable):
    """Salesforce refused sfsync's credentials (after one re-authentication): alert, pause, keep the batch."""

    alert_kind = AlertKind.CREDENTIAL_FAILURE

    def __init__(self, message: str, retry_after: float = 30.0) -> None:
        super().__init__(message, retry_after=retry_after, alert=True)


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
    ) -> None:
        self.cfg = cfg
        self.client = client or SalesforceClient(cfg.salesforce)
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

    def __repr__(self) -> str:
        return f"SalesforceSink({self.client!r})"

    # ------------------------------------------------------------------ Sink
    def write(self, batch: list[ApplyCommand]) -> list[Failure | None]:
        """One outcome per command, in order (see module contract)."""
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
            _ = self.client.sf
        except AuthenticationFailed as e:
            raise CredentialsRefused(f"Salesforce refused sfsync's credentials: {e.error}: {e.description}") from None
        except requests.RequestException as e:
            raise SinkUnavailable(f"Salesforce unreachable: {type(e).__name__}", retry_after=2.0) from None

    def close(self) -> None:
        self.client.close()

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

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run one API call; map whole-call errors (see module contract)."""
        self.calls += 1
        try:
            return fn()
        except AuthenticationFailed as e:
            raise CredentialsRefused(f"Salesforce refused sfsync's credentials: {e.error}: {e.description}") from None
        except SalesforceExpiredSession:
            raise CredentialsRefused("Salesforce session still invalid after re-authentication") from None
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
