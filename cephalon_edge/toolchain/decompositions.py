"""torch.export's passes without their repeated work.

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

Each ``run_decompositions`` then registers a Python kernel for every preservable CIA op under
22 dispatch keys and removes them after (``_override_composite_implicit_decomp``): ~5800
``OperatorBase.py_impl(key)`` calls per decomposition, each defining a fresh decorator whose
``Callable[_P, _T]`` annotations build two typing objects; that typing work alone was 7 of the
44 s of a TFLite export of the tests' token net. ``py_impl_decorators_reused()`` hands back the
decorator made the first time for the same op and key: it holds no state of its own (it
checks and registers when called), so what gets registered, and every error, is unchanged.

Every node a pass creates records where it came from (``node.meta["from_node"]``, a list of
``torch.fx.traceback.NodeSource``), and each new ``NodeSource`` deep-copies the whole chain of
the node it replaces: the chain grows by one link per pass, so the copying grows with the
square of the passes. ExecuTorch's XNNPACK lowering runs dozens of passes per delegated
subgraph; on the tests' token net the copies were a quarter of an ExecuTorch export (46 -> 35 s
median, ONNX 0.95x, TFLite 0.99x; identical files). A ``NodeSource`` is never changed once
made (torch and ExecuTorch only read the chains; its caches are of its own fields), so
``provenance_shared()`` gives the new one a new list holding the same links.

``passes_without_repeated_work()`` is all three; ``export`` runs every converter inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any


@contextmanager
def _replaced(owner: Any, name: str, replacement: Any, original: Any) -> Iterator[None]:
    """``owner.name`` is ``replacement`` within the block, ``original`` again after it."""
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


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

    with _replaced(utils, "_materialize_cpp_cia_ops", materialise_when_registrations_changed, original):
        yield


@contextmanager
def py_impl_decorators_reused() -> Iterator[None]:
    """Within the block, ``OperatorBase.py_impl(op, key)`` returns the decorator it returned
    the first time for that op and key (torch's own; it checks and registers when called)."""
    from torch._ops import OperatorBase

    original = OperatorBase.__dict__.get("py_impl")
    if original is None:
        yield
        return
    made: dict[tuple[int, Any], tuple[OperatorBase, Callable[..., Any]]] = {}

    def py_impl(self: OperatorBase, k: Any) -> Callable[..., Any]:
        try:
            return made[(id(self), k)][1]  # the op is kept alive with it, so its id is not reused
        except KeyError:
            decorator = original(self, k)
            made[(id(self), k)] = (self, decorator)
            return decorator
        except TypeError:  # an unhashable key: torch decides what to do with it
            return original(self, k)

    with _replaced(OperatorBase, "py_impl", py_impl, original):
        yield


@contextmanager
def provenance_shared() -> Iterator[None]:
    """Within the block, a new ``NodeSource`` holds the same links as its node's provenance
    chain instead of a deep copy of them (the same provenance, link for link)."""
    try:
        from torch.fx.traceback import NodeSource
    except ImportError:
        yield
        return
    original = NodeSource.__dict__["__init__"]

    def init(self: Any, node: Any, *args: Any, **kwargs: Any) -> None:
        if node is None or "from_node" not in node.meta:
            return original(self, node, *args, **kwargs)
        chain = node.meta.pop("from_node")
        try:
            original(self, node, *args, **kwargs)  # sees no chain: copies nothing
        finally:
            node.meta["from_node"] = chain
        self.from_node = list(chain)

    with _replaced(NodeSource, "__init__", init, original):
        yield


@contextmanager
def passes_without_repeated_work() -> Iterator[None]:
    """CIA ops materialised once, ``py_impl`` decorators reused and provenance chains shared,
    for the block."""
    with ExitStack() as stack:
        stack.enter_context(cia_ops_materialised_once())
        stack.enter_context(py_impl_decorators_reused())
        stack.enter_context(provenance_shared())
        yield
