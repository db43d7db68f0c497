"""Ordered parallel map with an optional progress bar (see :mod:`sslam_plugin.progress`)."""

from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Callable, List, Optional, Sequence, TypeVar

from ..progress import progress

__all__ = ["default_jobs", "parallel_map", "progress"]

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
    # forkserver, not fork: a fork of a process with threads (torch's, a caller's) can copy a lock
    # held by another thread and hang the worker for ever; the server process has no such threads
    with multiprocessing.get_context("forkserver").Pool(jobs) as pool:
        return list(progress(pool.imap(fn, items, chunksize=chunksize), total, desc, show_progress))
