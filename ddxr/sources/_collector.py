"""Decoding JSON without Python's cyclic garbage collector walking the process at every few hundred new dicts."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector inside the block.

    Decoding JSON creates hundreds of thousands of dicts, and every few hundred the collector would walk all the
    objects the build holds (a full pass costs ≈0.5 s once the runs are read); decoded JSON holds no reference
    cycles, so there is nothing for it to find. Objects freed inside the block never reach the collector at all.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
