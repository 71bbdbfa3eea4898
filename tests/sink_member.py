"""A PostgreSQL sink instance running in a thread of the test process (a replica of ``sfsync run
postgres-sink``), for tests that start, stop and count sink replicas. On the test path through
``pythonpath = ["tests"]``."""

from __future__ import annotations

import threading

from consumers.postgres.sink import PostgresSink
from consumers.runner import SinkRunner
from sfsync.config import SfsyncConfig
from sfsync.records import ApplyCommand, ApplyOperation, ApplyTarget, Source, utcnow


def account_upsert(i: int) -> ApplyCommand:
    """The processor's command to upsert Account ``001<i>`` with name ``n<i>`` (a change from Salesforce)."""
    return ApplyCommand(target=ApplyTarget.LOCAL, object="Account", operation=ApplyOperation.UPSERT,
                        sfid=f"001{i:015d}", values={"name": f"n{i}"}, fields=["name"], source=Source.SALESFORCE,
                        source_event_id=f"e{i}", source_commit_ts=utcnow(), source_position=str(i))


class SinkMember:
    """One sink replica: its runner, started at once; :meth:`leave` stops it cleanly."""

    def __init__(self, cfg: SfsyncConfig) -> None:
        self.stop = threading.Event()
        self.runner = SinkRunner(cfg, PostgresSink(cfg, retry_after=0.3, connect_timeout=1))
        self.thread = threading.Thread(target=self.runner.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def owned(self) -> int:
        """How many partitions the replica holds now."""
        return len(self.runner._owned)

    def leave(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
