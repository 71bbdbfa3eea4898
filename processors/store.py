"""Where the processor keeps its ``records`` Table: the faust App settings for the store.

:func:`store_settings` is the one place that decides it (``processor`` in the config,
:class:`sfsync.config.ProcessorConfig`):

- ``rocksdb`` (the default): faust's RocksDB store (``rocksdict``), one database per partition under
  ``processor.data_dir/<processor group>/worker-<n>/``. A restarted worker opens its files and recovers
  from the changelog what they do not hold yet; a worker without files (a new machine) recovers everything
  from the changelog, which stays the durable copy.

Several workers on one machine (``sfsync dev`` with two processors, the tests) share ``data_dir``: each
process claims the first free ``worker-<n>`` slot (an exclusive ``flock`` on its ``slot.lock``, held until
the process exits) and keeps its partition files there. faust opens a partition's database in the active
worker and again in a standby one; in one directory the second open fails on RocksDB's lock and the worker
crashes (seen with two workers and a partition handed over). A restarted worker takes the lowest free slot:
its own when it is the only worker, else perhaps another's, which is as good — each partition's files say
which changelog offset they hold (faust's persisted offset) and recovery reads on from there.
- ``memory``: faust's in-memory store; every record in the worker's memory, rebuilt from the changelog at
  every start.

Why a subclass of faust's RocksDB store (:class:`RecordStore`, URL scheme ``sfsync-rocksdb://``) and not
``rocksdb://`` itself: faust opens every partition's database with its own 2 GiB block cache and three
64 MiB write buffers, and takes RocksDB options only from the Table's ``options`` — so a worker holding six
partitions may grow to ~13 GB, and the Table (built in :mod:`processors.app`) would have to carry store
details. :class:`RecordStore` gives all partitions of the table one block cache of ``processor.cache_mb``
and each partition two write buffers of ``processor.write_buffer_mb``, read from the store URL's query; it
changes nothing else (keys, values, partition files, recovery and offsets are faust's). The scheme is
registered in faust's store registry when this module is imported (what a ``faust.stores`` entry point
does), which :mod:`processors.app` does before it builds the app.

Reads and writes by partition: faust's RocksDB store files a ``records.data[key] = value`` under the partition
of the event being processed (``faust.streams.current_event()``), and a change released from a timer (a
parked change given up, :mod:`processors.identity`) is not that event. So the processor reads and writes its
Table only through :func:`read_in_partition` / :func:`write_in_partition`, with the partition of the change
the entry belongs to, and sends the changelog record to that same partition number.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import faust.stores
import rocksdict
from faust.stores import rocksdb as faust_rocksdb
from yarl import URL

from sfsync.config import ProcessorConfig, SfsyncConfig
from sfsync.kafka.topics import TopicNames

#: the faust store URL scheme of :class:`RecordStore`
STORE_SCHEME = "sfsync-rocksdb"
#: per partition: the write buffers (memtables) in memory at most, the active one and one being flushed
WRITE_BUFFERS = 2
MIB = 1024 * 1024
#: worker slots per processor group and machine (``worker-0`` .. ``worker-63``)
MAX_SLOTS = 64

#: group directory -> (slot directory, the open file descriptor that holds its lock) of this process
_claimed: dict[Path, tuple[Path, int]] = {}


def processor_config(cfg: SfsyncConfig) -> ProcessorConfig:
    """The config's ``processor`` section."""
    return cfg.processor


def data_dir(cfg: SfsyncConfig) -> Path:
    """The processor group's directory under ``processor.data_dir`` (apps of other topic prefixes that share
    it never open each other's files); the workers' slots are in it. Claims nothing."""
    root = Path(processor_config(cfg).data_dir).expanduser().resolve()
    return root / TopicNames(cfg.kafka.topic_prefix).processor_group


def store_url(processor: ProcessorConfig) -> str:
    """The faust store URL for ``processor`` (its RocksDB memory bounds in the query)."""
    if processor.store == "memory":
        return "memory://"
    return f"{STORE_SCHEME}://?cache_mb={processor.cache_mb}&write_buffer_mb={processor.write_buffer_mb}"


def claim_slot(group_dir: Path) -> Path:
    """This process's slot directory under ``group_dir``: the first ``worker-<n>`` no other process holds,
    locked until this process exits (the same one for every call in a process)."""
    if group_dir in _claimed:
        return _claimed[group_dir][0]
    group_dir.mkdir(parents=True, exist_ok=True)
    for n in range(MAX_SLOTS):
        slot = group_dir / f"worker-{n}"
        slot.mkdir(exist_ok=True)
        fd = os.open(slot / "slot.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _claimed[group_dir] = (slot, fd)
        return slot
    raise RuntimeError(f"all {MAX_SLOTS} worker slots under {group_dir} are held by running processes")


def store_settings(cfg: SfsyncConfig) -> dict[str, Any]:
    """The ``faust.App`` keyword arguments that choose and place the Table store. With ``rocksdb``, claims
    this process's worker slot (:func:`claim_slot`)."""
    processor = processor_config(cfg)
    directory = data_dir(cfg)
    if processor.store == "memory":
        # memory:// too: faust creates its data directory anyway (``<app id>-data`` in the working directory)
        directory.mkdir(parents=True, exist_ok=True)
        return {"store": store_url(processor), "datadir": str(directory)}
    return {"store": store_url(processor), "datadir": str(claim_slot(directory))}


class _BoundedOptions(faust_rocksdb.RocksDBOptions):
    """faust's RocksDB options with one block cache for every partition database of the store."""

    def __init__(self, cache: rocksdict.Cache, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cache = cache

    def as_options(self) -> rocksdict.Options:
        options = super().as_options()
        table = rocksdict.BlockBasedOptions()  # faust's table factory settings, with the shared cache
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_block_cache(self._cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


class RecordStore(faust_rocksdb.Store):
    """faust's RocksDB store with bounded memory: ``cache_mb`` of block cache shared by the table's
    partitions, ``write_buffer_mb`` per write buffer (URL query of ``sfsync-rocksdb://``)."""

    def __init__(self, url: str | URL, app: Any, table: Any, **kwargs: Any) -> None:
        parsed = URL(url)
        cache_mb = int(parsed.query.get("cache_mb", ProcessorConfig().cache_mb))
        write_buffer_mb = int(parsed.query.get("write_buffer_mb", ProcessorConfig().write_buffer_mb))
        super().__init__(parsed.with_query(None), app, table, **kwargs)
        if not self.use_rocksdict:  # pragma: no cover - python-rocksdb is not a dependency
            raise RuntimeError("sfsync's RocksDB store needs rocksdict")
        options = {"write_buffer_size": write_buffer_mb * MIB, "max_write_buffer_number": WRITE_BUFFERS,
                   "target_file_size_base": max(write_buffer_mb, 8) * MIB, **dict(self.options or {})}
        self.rocksdb_options = _BoundedOptions(rocksdict.Cache(cache_mb * MIB), **options,
                                               use_rocksdict=True)


faust.stores.STORES.aliases.setdefault(STORE_SCHEME, f"{__name__}:RecordStore")


def read_in_partition(store: Any, partition: int, key: bytes) -> bytes | None:
    """``key``'s value in the table's ``partition``, whatever event is being handled.

    faust's RocksDB store reads and writes the database of the current event's partition
    (``current_event()``); the processor asks by the partition of the change an entry belongs to (the
    identity move reads a local key's entry while handling a change of another partition, and a released
    change is decided outside any event). The memory store keeps one mapping for every partition."""
    if isinstance(store, faust_rocksdb.Store):
        value: bytes | None = store._db_for_partition(partition).get(key)
        return value
    found: bytes | None = store.get(key)
    return found


def write_in_partition(store: Any, partition: int, key: bytes, value: bytes) -> None:
    """Write ``key`` into the table's ``partition`` (see :func:`read_in_partition`); the caller sends its
    changelog record to the same partition number."""
    if isinstance(store, faust_rocksdb.Store):
        store._db_for_partition(partition).put(key, value)
        store._key_index[key] = partition
    else:
        store[key] = value
