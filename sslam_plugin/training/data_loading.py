"""Closing fairseq's batch iterators when they are done, instead of at garbage collection.

fairseq builds a new ``EpochBatchIterator`` every epoch, with persistent
DataLoader workers and a background thread that prefetches batches, and never
shuts either down: an epoch ends when the count of batches is reached, not when
the DataLoader raises ``StopIteration``. The old workers then live until the
garbage collector finalises the iterator, which can happen in the middle of a
checkpoint save and takes several seconds per worker (the 20-110 s stalls of
multi-worker runs); a prefetch thread still decoding clips when the process
exits aborts it ("terminate called without an active exception").

The tasks close the previous iterator of a dataset when they hand out a new
one, and the launcher closes every live iterator when training returns. This
touches fairseq's and PyTorch's iterator internals, so it lives here alone and
``tests/test_data_loading.py`` checks that the workers and threads are gone.
"""

from __future__ import annotations

import logging
import queue
from typing import Any, Dict, Iterator, Optional

__all__ = ["close_batch_iterator", "close_all_batch_iterators", "track_batch_iterator"]

logger = logging.getLogger(__name__)

# Strong references: fairseq drops its iterators when training returns, while
# their prefetch threads still run. Closed iterators leave this table.
_LIVE: Dict[int, Any] = {}


def track_batch_iterator(epoch_itr: Any) -> None:
    """Remember ``epoch_itr`` so that :func:`close_all_batch_iterators` closes it."""
    _LIVE[id(epoch_itr)] = epoch_itr


def close_all_batch_iterators() -> None:
    """Close every tracked iterator (end of training)."""
    for epoch_itr in list(_LIVE.values()):
        close_batch_iterator(epoch_itr)


def close_batch_iterator(epoch_itr: Any) -> None:
    """Stop the prefetch thread and shut down the DataLoader workers of a fairseq ``EpochBatchIterator``."""
    for counting in (getattr(epoch_itr, "_cur_epoch_itr", None), getattr(epoch_itr, "_next_epoch_itr", None)):
        source = getattr(counting, "_itr", None)
        if source is not None and hasattr(source, "_consumer"):  # fairseq's BufferedIterator
            _stop_prefetch_thread(source)
            source = source._iterable
        _shutdown_workers(source)
    _shutdown_workers(getattr(epoch_itr, "dataloader", None))
    _LIVE.pop(id(epoch_itr), None)


def _stop_prefetch_thread(buffered: Any) -> None:
    consumer = buffered._consumer
    if consumer is None:
        return
    consumer._max_len = 0  # leave after the batch in hand (it puts a sentinel then)
    while consumer.is_alive():
        try:  # make room: the thread may be blocked on a full queue
            buffered._queue.get(timeout=0.05)
        except queue.Empty:
            pass
    consumer.join()
    buffered._consumer = None


def _shutdown_workers(source: Any) -> None:
    """``source``: a DataLoader (its persistent iterator) or a DataLoader iterator."""
    iterator: Optional[Iterator[Any]] = getattr(source, "_iterator", None)  # a DataLoader: its persistent iterator
    if iterator is None:
        iterator = source
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
