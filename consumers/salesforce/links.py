"""New Salesforce ids onto the local rows: a created record is done only once its link is durable.

After each Salesforce write the runner calls the function :func:`link_back` returns, inside the batch's
version transaction. It writes every ``(object, local key, sfid)`` the sink learned — records it
created, and records whose command did not carry their sfid — onto the local rows as an sfsync write
(no outbox echo). If PostgreSQL cannot take them it raises ``SinkUnavailable``: the runner repeats the
whole batch, the upserts on the external id are idempotent, and they name the same ids again, so the
link is written on a later attempt; nothing is committed before it is.

A pair that cannot be written because of its data (the row was deleted meanwhile: skipped as done;
another row already holds that sfid: SQLSTATE 23505) is logged; the record's next change links it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from consumers.postgres.sink import PostgresSink
from consumers.salesforce.sink import SalesforceSink
from sfsync.failures import Failure
from sfsync.records import ApplyCommand

log = logging.getLogger("sfsync.consumers.salesforce.links")

AfterWrite = Callable[[list[ApplyCommand], list[Failure | None]], None]


def link_back(sink: SalesforceSink, local: PostgresSink) -> AfterWrite:
    def write_back(_commands: list[ApplyCommand], _results: list[Failure | None]) -> None:
        created = sink.take_created_ids()
        if not created:
            return
        failures = local.write_back_sfids(created)
        for (obj, key, sfid), failure in zip(created, failures, strict=True):
            if failure is not None:
                log.warning("could not record sfid %s on %s local key %s: %s", sfid, obj, key, failure.message)

    return write_back
