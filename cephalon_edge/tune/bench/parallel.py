"""Device runs in parallel, one thread each, and what Ctrl-C does to them: every run is
stopped (no run starts another step), the threads are waited for, then each run cleans up
after itself on its device. Shared by Android phones and Linux boards (torch-free)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol, Sequence, TypeVar


class Cancellable(Protocol):
    def cancel(self) -> None:
        """After Ctrl-C, once every thread has stopped: remove what the run left on its device."""


R = TypeVar("R", bound=Cancellable)


def run_each(runs: Sequence[R], work: Callable[[R], None], stop: Callable[[R], None]) -> None:
    """``work(run)`` for every run on its own thread (``work`` keeps its own failures);
    on Ctrl-C, ``stop(run)`` for each, wait for the threads, ``run.cancel()`` each, re-raise."""
    if not runs:
        return
    pool = ThreadPoolExecutor(max_workers=len(runs))
    futures = [pool.submit(work, run) for run in runs]
    try:
        for future in futures:
            future.result()
    except KeyboardInterrupt:
        for run in runs:
            stop(run)
        pool.shutdown(wait=True, cancel_futures=True)
        for run in runs:
            run.cancel()
        raise
    pool.shutdown()
