"""Python's cyclic garbage collector, run less often while torch builds graphs.

torch.export, the decompositions and the converters allocate millions of small objects (FX
nodes, fake tensors, pytree specs, MLIR and flatbuffer builders), most of them alive until the
segment is done. At Python's default gen-0 threshold (700 allocations) the collector ran
~2000 times in one TFLite export of the tests' token net and took 15-20% of it (3.7 of 26.9 s;
ExecuTorch 5.8 of 40.5 s; ONNX 2.2 of 14.8 s), mostly re-walking young objects that were
still alive. At 10 000 it took 0.4-2 s. Garbage is still collected, a few thousand objects
later; the thresholds are restored after the block.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

GEN0_THRESHOLD = 10_000


@contextmanager
def collected_less_often(gen0: int = GEN0_THRESHOLD) -> Iterator[None]:
    """Within the block, a young-generation collection every ``gen0`` net allocations (never
    more often than Python's own setting); usable as a decorator."""
    before = gc.get_threshold()
    gc.set_threshold(max(gen0, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
