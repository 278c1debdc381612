"""torch.export's decompositions without the repeated walk over the dispatcher.

Every converter decomposes each segment's exported program (``run_decompositions``: in
torch.onnx, litert-torch and ExecuTorch alike), and each time torch asks which
CompositeImplicitAutograd (CIA) ops it may preserve. To answer, it "materialises" every CIA op
the C++ dispatcher knows into ``torch.ops`` (a getattr per op, about a thousand) once per op
namespace: some thirty times per question, several questions per segment. Materialising is
idempotent: once done, it changes nothing until an op is registered. Measured on the tiny test
net (13 segments, one worker): a TFLite export 26.7 -> 21.5 s, ExecuTorch 33.8 -> 27.5 s, ONNX
14.0 -> 10.8 s, with byte-identical files.

``cia_ops_materialised_once()`` materialises again only when the dispatcher's CIA
registrations differ from the last time it did (an op registered mid-export is still seen);
torch's own answer is then computed as before, from the same ``torch.ops``. Torch's comment
("we can't cache this because custom op registry API in python can still add entries to the
C++ dispatcher") is why the key is the registration list itself rather than a flag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def cia_ops_materialised_once() -> Iterator[None]:
    """Within the block, torch materialises CIA ops only when their registrations changed.
    Does nothing on a torch without the private function it replaces."""
    import torch

    try:
        from torch._export import utils
    except ImportError:
        yield
        return
    original: Callable[[], None] | None = getattr(utils, "_materialize_cpp_cia_ops", None)
    if original is None:
        yield
        return
    done_for: list[int] = []

    def materialise_when_registrations_changed() -> None:
        key = hash(tuple(torch._C._dispatch_get_registrations_for_dispatch_key("CompositeImplicitAutograd")))
        if done_for != [key]:
            original()
            done_for[:] = [key]

    utils._materialize_cpp_cia_ops = materialise_when_registrations_changed
    try:
        yield
    finally:
        utils._materialize_cpp_cia_ops = original
