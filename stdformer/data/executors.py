"""Where per-item work runs: a tiny interface so preprocessing can move from a local process
pool to a Dask cluster without changing the code that uses it.

An executor has one method, `map_ordered(fn, items)`: apply a picklable module-level `fn` to
each item and yield the results in input order (whatever order they finish in), so outputs
written from the stream are deterministic. Exceptions raised by `fn` propagate to the caller.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol


class Executor(Protocol):
    def map_ordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]: ...


def _limit_threads() -> None:
    """One thread per worker process: parallelism comes from the processes, and
    oversubscribed BLAS/OpenCV thread pools only slow everything down."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


class SerialExecutor:
    """Runs everything in the calling process (workers <= 1; debugging, tests)."""

    def map_ordered(self, fn, items):
        for item in items:
            yield fn(item)


class LocalExecutor:
    """A pool of `workers` local processes, forked from a fresh forkserver (never from the
    caller, which may already run torch/OpenMP threads). Results come back in input order; at
    most `prefetch` items are in flight, which bounds memory when results are large. A worker
    that dies (killed, out of memory) raises BrokenProcessPool instead of hanging."""

    def __init__(self, workers: int, prefetch: int | None = None):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self.prefetch = prefetch if prefetch is not None else 2 * workers

    def map_ordered(self, fn, items):
        # forkserver: workers fork from a clean single-threaded server that has imported fn's
        # module (torch etc.) once, instead of each importing it from scratch (seconds each).
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", fn.__module__])
        with ProcessPoolExecutor(self.workers, mp_context=ctx,
                                 initializer=_limit_threads) as pool:
            pending: deque = deque()
            try:
                for item in items:
                    pending.append(pool.submit(fn, item))
                    if len(pending) >= self.prefetch:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:  # on error / early stop: drop queued work
                    future.cancel()


class DaskExecutor:
    """Submits to a `distributed.Client` (pass one, or a scheduler address to connect to).

    Needs the optional `dask` extra (`pip install -e .[dask]`); only `client.submit` and
    `future.result()` are used, at most `prefetch` futures in flight. A client made here from
    `address` lives for one `map_ordered` call and is closed after it (an unclosed client keeps
    reconnecting to a scheduler that has gone away); a client passed in is left open.
    """

    def __init__(self, client: Any = None, address: str | None = None, prefetch: int = 16):
        if client is None:
            try:
                import distributed  # noqa: F401
            except ImportError as e:  # pragma: no cover - depends on the optional extra
                raise RuntimeError("the dask executor needs `pip install -e .[dask]`") from e
        self.client = client
        self.address = address
        self.prefetch = prefetch

    def map_ordered(self, fn, items):
        client = self.client
        if client is None:
            from distributed import Client

            client = Client(self.address)
        pending: deque = deque()
        try:
            for item in items:
                # pure=False: identical items are still separate tasks (no silent dedup).
                pending.append(client.submit(fn, item, pure=False))
                if len(pending) >= self.prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            if client is not self.client:
                client.close()


def make_executor(kind: str, workers: int, address: str | None = None) -> Executor:
    """'local' -> LocalExecutor(workers) (SerialExecutor for workers <= 1); 'dask' ->
    DaskExecutor(address=address); 'serial' -> SerialExecutor."""
    if kind == "serial" or (kind == "local" and workers <= 1):
        return SerialExecutor()
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "dask":
        return DaskExecutor(address=address)
    raise ValueError(f"unknown executor {kind!r} (expected 'local', 'serial' or 'dask')")
