"""Progress bars for the long jobs a user starts outside the trainer (tqdm, on stderr).

Every tool that loops over many clips (feature extraction, evaluation, norm
statistics, manifest scanning and validation, the linear probe) shows its bar
through these two functions, so they all behave alike:

* bars go to stderr, so stdout stays parseable (summaries, JSON, overrides);
* ``enabled=True`` shows a bar only when stderr is a terminal (tqdm's
  ``disable=None``): logs, pipes and captured test output get none;
* ``enabled=False`` (the tools' ``--no-progress``) never shows one.
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, Optional, TypeVar

from tqdm import tqdm

__all__ = ["progress", "progress_bar"]

T = TypeVar("T")


def progress_bar(total: Optional[int], desc: str = "", unit: str = "it", enabled: bool = True) -> tqdm:
    """A bar to ``update(n)`` by hand (for loops that advance by batches); ``close()`` it when done."""
    # disable=None: tqdm turns itself off when stderr is not a TTY
    return tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if enabled else True,
        mininterval=0.5, smoothing=0.05, dynamic_ncols=True,
    )


def progress(
    items: Iterable[T], total: Optional[int] = None, desc: str = "", enabled: bool = True, unit: str = "file"
) -> Iterator[T]:
    """Yield ``items`` while advancing a bar (see :func:`progress_bar` for when it shows)."""
    if not enabled:
        return iter(items)
    return iter(
        tqdm(items, total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, mininterval=0.5,
             smoothing=0.05, dynamic_ncols=True)
    )
