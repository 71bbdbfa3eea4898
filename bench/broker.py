"""What the embedded broker's transactions cost, and how that cost grows with the transactions a partition holds.

Why this exists: run after run on one stack, the broker's CPU per pipeline record grew (1.2 -> 2.4 -> 3.0 ms)
and the inbound trickle latency with it, while its CPU per message relayed by the bare faust relay (plain,
non-transactional topics) stayed flat. The CDC producer writes ``changes.inbound`` in transactions (one per
batch, every 20 ms or 500 events) and the sinks read it ``read_committed``. This measures those two things
on the embedded broker alone, phase after phase on the same topics:

- ``txn``: ``--txns`` transactions of ``--per-txn`` records each, while a ``read_committed`` consumer tails
  the topic (as the PostgreSQL sink does): broker CPU µs per transaction and transactions/s;
- ``plain``: as many records, idempotent and not transactional, to another topic: broker CPU µs per record.

If the first grows phase after phase and the second does not, the broker's cost is in its transaction
bookkeeping, not in the amount of data. Not a product figure: the embedded broker is for dev and tests
(docs/kafka.md); Apache Kafka indexes aborted transactions and is not expected to show this.

Run: python bench/broker.py [--phases 5] [--txns 1000] [--per-txn 4] [--no-tail]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from confluent_kafka import Consumer, Producer
from stack import create_topics, print_table, tree_cpu_seconds

from sfsync.devstack.broker import EmbeddedBroker


def tail(bootstrap: str, topic: str, stop: threading.Event, seen: list[int]) -> None:
    """Read ``topic`` read_committed from its end until ``stop``, counting records (the sink's way)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-tail", "auto.offset.reset": "latest",
                         "isolation.level": "read_committed", "fetch.wait.max.ms": 100, "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    try:
        while not stop.is_set():
            seen[0] += sum(1 for m in consumer.consume(500, 0.2) if m.error() is None)
    finally:
        consumer.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phases", type=int, default=5)
    ap.add_argument("--txns", type=int, default=1000, help="transactions per phase")
    ap.add_argument("--per-txn", type=int, default=4, help="records per transaction")
    ap.add_argument("--no-tail", action="store_true", help="no read_committed consumer (the contrast)")
    args = ap.parse_args()

    broker = EmbeddedBroker(log_path=Path(tempfile.mkdtemp(prefix="sfsync-bench-broker-")) / "broker.log")
    bootstrap = broker.start()
    stop = threading.Event()
    rows: list[tuple[str, str]] = []
    try:
        assert broker.proc is not None
        pid = broker.proc.pid
        create_topics(bootstrap, ["txn", "plain"], 3)
        txn = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"bench-{uuid.uuid4().hex}",
                        "linger.ms": 5})
        txn.init_transactions(30)
        plain = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
        seen = [0]
        if not args.no_tail:
            threading.Thread(target=tail, args=(bootstrap, "txn", stop, seen), daemon=True).start()
            time.sleep(5)  # the tailing consumer's group join (~half the session timeout)
        value = b"x" * 300
        records = args.txns * args.per_txn
        for phase in range(1, args.phases + 1):
            cpu0, t0 = tree_cpu_seconds(pid), time.perf_counter()
            for t in range(args.txns):
                txn.begin_transaction()
                for i in range(args.per_txn):
                    txn.produce("txn", value, key=str((t * args.per_txn + i) % 1000))
                txn.commit_transaction(30)
            cpu1, t1 = tree_cpu_seconds(pid), time.perf_counter()
            for i in range(records):
                while True:
                    try:
                        plain.produce("plain", value, key=str(i % 1000))
                        break
                    except BufferError:
                        plain.poll(0.01)
                plain.poll(0)
            plain.flush(60)
            cpu2, t2 = tree_cpu_seconds(pid), time.perf_counter()
            rows.append((f"phase {phase} (txn topic holds {phase * args.txns:,} transactions)",
                         f"{(cpu1 - cpu0) * 1e6 / args.txns:,.0f} µs/transaction, {args.txns / (t1 - t0):,.0f} txn/s; "
                         f"plain {(cpu2 - cpu1) * 1e6 / records:,.1f} µs/record, {records / (t2 - t1):,.0f} records/s"))
        rows.append(("read_committed tail consumer",
                     "none (--no-tail)" if args.no_tail else f"{seen[0]:,} records read"))
    finally:
        stop.set()
        broker.stop()
    print_table(f"embedded broker: CPU per transaction ({args.per_txn} records, 3 partitions)"
                f"{'' if args.no_tail else ' with a read_committed consumer tailing'}, vs per plain record", rows)


if __name__ == "__main__":
    main()
