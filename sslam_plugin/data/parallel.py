"""Ordered parallel maps with an optional progress bar (see :mod:`sslam_plugin.progress`).

Workers come from a forkserver that has imported the mapped function's module
once (``set_forkserver_preload``): a worker is a cheap fork of it instead of a
fresh interpreter importing the package (torch included) again, which on a
busy node costs seconds per worker. :func:`parallel_map_chunks` hands each
worker whole chunks, so a million small items cost a few thousand messages.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Callable, List, Optional, Sequence, TypeVar

from ..progress import progress, progress_bar

__all__ = ["default_jobs", "parallel_map", "parallel_map_chunks", "progress"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def default_jobs() -> int:
    """The CPUs this process may use (respects taskset/cgroup affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    jobs: int = 1,
    desc: str = "",
    show_progress: bool = False,
    chunksize: Optional[int] = None,
) -> List[R]:
    """``[fn(x) for x in items]``, in order, over ``jobs`` processes.

    ``fn`` must be a picklable module-level function and must not raise (return
    the error instead): one exception would stop the whole map. ``jobs <= 1``
    runs in this process, which is what tests and small inputs want.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    total = len(items)
    if jobs == 1 or total < 2 * jobs:
        return list(progress(map(fn, items), total, desc, show_progress))
    if chunksize is None:
        # large chunks amortise the inter-process traffic; small enough to keep the bar moving
        chunksize = max(1, min(512, total // (jobs * 16)))
    with _pool(fn, jobs) as pool:
        return list(progress(pool.imap(fn, items, chunksize=chunksize), total, desc, show_progress))


def _pool(fn: Callable, jobs: int):
    # forkserver, not fork: a fork of a process with threads (torch's, a caller's) can copy a lock
    # held by another thread and hang the worker for ever; the server process has no such threads
    context = multiprocessing.get_context("forkserver")
    module = getattr(getattr(fn, "func", fn), "__module__", None)  # a functools.partial's function
    if module and module != "__main__":
        context.set_forkserver_preload([module])  # no effect once this process's server runs
    return context.Pool(jobs)


def parallel_map_chunks(
    fn: Callable[[Sequence[T]], List[R]],
    items: Sequence[T],
    jobs: int = 1,
    desc: str = "",
    show_progress: bool = False,
    chunk_size: Optional[int] = None,
    unit: str = "file",
) -> List[R]:
    """``fn`` applied to consecutive chunks of ``items``, the results joined, in order, over ``jobs`` processes.

    ``fn(chunk)`` returns one result per item of the chunk; it must be picklable
    (a module-level function or a ``functools.partial`` of one) and must not
    raise. The bar counts items, not chunks.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    total = len(items)
    if chunk_size is None:
        # a few chunks per worker and then some, for balance; bounded for a moving bar and small messages
        chunk_size = max(64, min(2000, total // (jobs * 8) or 1))
    chunks = [items[i : i + chunk_size] for i in range(0, total, chunk_size)]
    results: List[R] = []
    bar = progress_bar(total, desc, unit=unit, enabled=show_progress)
    try:
        if jobs == 1 or len(chunks) < 2:
            for part in map(fn, chunks):
                results.extend(part)
                bar.update(len(part))
        else:
            with _pool(fn, min(jobs, len(chunks))) as pool:
                for part in pool.imap(fn, chunks):
                    results.extend(part)
                    bar.update(len(part))
    finally:
        bar.close()
    if len(results) != total:
        raise RuntimeError(f"{desc or 'parallel map'}: {len(results)} results for {total} items")
    return results

