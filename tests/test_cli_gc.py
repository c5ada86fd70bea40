"""``click2dial serve`` tunes the garbage collector once it has started:
start-up objects are frozen out of later collections and young collections
run every 50,000 allocations instead of 700 (see docs/benchmarks.md for the
POST latency this bought)."""

from __future__ import annotations

import gc

from click2dial import cli


def test_serve_tuning_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        cli._tune_gc()
        assert gc.get_threshold()[0] == cli.GC_YOUNG_THRESHOLD
        assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
