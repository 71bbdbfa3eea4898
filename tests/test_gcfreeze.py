"""The GC freezer (sfsync/gcfreeze.py): survivors of a full collection leave the walked generations, frozen
cyclic garbage is collected by a reclaim, and a frozen object without a cycle is still freed at once."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from sfsync.gcfreeze import GcFreezer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def freezer() -> Iterator[tuple[GcFreezer, Clock]]:
    clock = Clock()
    f = GcFreezer(reclaim_s=600.0, clock=clock)
    f.install()
    yield f, clock
    f.uninstall()


def walked() -> set[int]:
    """Ids of the objects a full collection walks (every generation but the permanent one)."""
    return {id(o) for o in gc.get_objects()}


def test_install_freezes_what_is_alive(freezer: tuple[GcFreezer, Clock]) -> None:
    assert gc.get_freeze_count() > 0
    kept = [Node() for _ in range(10)]
    assert all(id(n) in walked() for n in kept)  # new objects are walked until a full collection


def test_a_tick_after_a_full_collection_freezes_its_survivors(freezer: tuple[GcFreezer, Clock]) -> None:
    f, _clock = freezer
    kept = [Node() for _ in range(1000)]
    f.tick()
    assert id(kept[0]) in walked() and f.counts["frozen"] == 0  # no full collection yet: nothing to freeze
    gc.collect()
    f.tick()
    assert f.counts == {"full": 1, "frozen": 1, "reclaimed": 0}
    assert not {id(n) for n in kept} & walked()


def test_a_frozen_object_without_a_cycle_is_freed_by_its_last_reference(freezer: tuple[GcFreezer, Clock]) -> None:
    f, _clock = freezer
    node = Node()
    gone = weakref.ref(node)
    gc.collect()
    f.tick()
    assert id(node) not in walked()
    del node
    assert gone() is None


def test_frozen_cyclic_garbage_waits_for_the_reclaim(freezer: tuple[GcFreezer, Clock]) -> None:
    f, clock = freezer
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    gc.collect()
    f.tick()  # the pair is frozen while alive
    del a, b
    gc.collect()
    assert gone() is not None  # garbage now, but frozen: not walked
    clock.now = 599.0
    f.tick()
    assert gone() is not None and f.counts["reclaimed"] == 0
    clock.now = 600.0
    f.tick()
    assert gone() is None and f.counts["reclaimed"] == 1
    assert gc.get_freeze_count() > 0  # the survivors of the reclaim are frozen again
