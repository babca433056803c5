"""HER2_GC_GEN0_THRESHOLD: `her2-consumer run` sets the young generation's threshold (0 leaves
the interpreter's), the older generations' stay as they were."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from consumer.app import tune_gc


@pytest.fixture(autouse=True)
def _restore_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_young_threshold_is_set_and_the_older_ones_kept() -> None:
    gc.set_threshold(700, 11, 12)
    tune_gc(50_000)
    assert gc.get_threshold() == (50_000, 11, 12)


def test_zero_leaves_the_interpreters_thresholds() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(0)
    assert gc.get_threshold() == (700, 10, 10)
