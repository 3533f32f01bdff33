"""responsive_threads: a short GIL switch interval for the overlap, restored afterwards."""

from __future__ import annotations

import sys

import pytest

from snowkit.cmdb.responsive import RESPONSIVE_INTERVAL, responsive_threads


@pytest.fixture(autouse=True)
def default_interval() -> None:
    sys.setswitchinterval(0.005)


def test_short_inside_restored_after_even_on_error() -> None:
    with pytest.raises(RuntimeError), responsive_threads():
        assert sys.getswitchinterval() == pytest.approx(RESPONSIVE_INTERVAL)
        with responsive_threads(0.002):  # nested: the outermost setting stays
            assert sys.getswitchinterval() == pytest.approx(RESPONSIVE_INTERVAL)
        assert sys.getswitchinterval() == pytest.approx(RESPONSIVE_INTERVAL)
        raise RuntimeError("the transform failed")
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_an_interval_already_shorter_is_left_alone() -> None:
    sys.setswitchinterval(0.0001)
    try:
        with responsive_threads():
            assert sys.getswitchinterval() == pytest.approx(0.0001)
        assert sys.getswitchinterval() == pytest.approx(0.0001)
    finally:
        sys.setswitchinterval(0.005)
