"""quiet_gc: long-lived objects are frozen for a load and handed back after it."""

from __future__ import annotations

import gc
import threading

import pytest

from snowkit.cmdb.quiet_gc import quiet_gc


def test_objects_alive_at_the_start_are_frozen_then_handed_back() -> None:
    assert gc.get_freeze_count() == 0
    keep = [[] for _ in range(10)]  # containers: tracked by the collector
    # counts, not identities: a frozen object that loses its last reference is still freed
    # (refcounting), so the exact count may drop while frozen; unfreezing empties it
    with quiet_gc():
        assert gc.get_freeze_count() >= len(keep)
        more = [[] for _ in range(10)]
        with quiet_gc():  # nested: what came since is frozen too
            nested = gc.get_freeze_count()
            assert nested >= len(keep) + len(more)
        assert gc.get_freeze_count() > 0  # the nested block did not unfreeze
    assert gc.get_freeze_count() == 0


def test_unfrozen_even_when_the_load_fails() -> None:
    with pytest.raises(RuntimeError), quiet_gc():
        raise RuntimeError("the load failed")
    assert gc.get_freeze_count() == 0


def test_someone_elses_freeze_is_left_alone() -> None:
    gc.freeze()
    try:
        with quiet_gc():
            pass
        assert gc.get_freeze_count() > 0  # not unfrozen by us
    finally:
        gc.unfreeze()


def test_cycles_made_during_the_block_are_still_collected_after() -> None:
    collected = threading.Event()

    class Node:
        def __del__(self) -> None:
            collected.set()

    with quiet_gc():
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        del a, b
    gc.collect()
    assert collected.is_set()
