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
touches fairseq's and PyTorch's iterator internals, so it lives here alone: a
field that is not where it should be raises an error naming it (never a
silent no-op), the fairseq code that defines them is pinned
(:mod:`.fairseq_adapter.pins`), and ``tests/test_data_loading.py`` checks that
the workers and threads are gone.
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
    from fairseq.data.iterators import BufferedIterator, CountingIterator

    for counting in (_field(epoch_itr, "_cur_epoch_itr"), _field(epoch_itr, "_next_epoch_itr")):
        if counting is None:
            continue
        source = _field(counting, "_itr") if isinstance(counting, CountingIterator) else None
        if isinstance(source, BufferedIterator):
            _stop_prefetch_thread(source)
            source = _field(source, "_iterable")
        _shutdown_workers(source)
    _shutdown_workers(_field(epoch_itr, "dataloader"))
    _LIVE.pop(id(epoch_itr), None)


def _field(owner: Any, name: str) -> Any:
    """``owner.name``, a private field of fairseq or PyTorch; its absence is an error, not a no-op."""
    try:
        return getattr(owner, name)
    except AttributeError:
        raise AttributeError(
            f"{type(owner).__module__}.{type(owner).__name__} has no field {name!r} any more: the installed "
            "fairseq or PyTorch changed; review sslam_plugin.training.data_loading"
        ) from None


def _stop_prefetch_thread(buffered: Any) -> None:
    consumer = _field(buffered, "_consumer")
    if consumer is None:
        return
    _field(consumer, "_max_len")
    consumer._max_len = 0  # leave after the batch in hand (it puts a sentinel then)
    while consumer.is_alive():
        try:  # make room: the thread may be blocked on a full queue
            _field(buffered, "_queue").get(timeout=0.05)
        except queue.Empty:
            pass
    consumer.join()
    buffered._consumer = None


def _shutdown_workers(source: Any) -> None:
    """``source``: a DataLoader (its persistent iterator), a DataLoader iterator, or None."""
    from torch.utils.data import DataLoader
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    iterator: Optional[Iterator[Any]] = _field(source, "_iterator") if isinstance(source, DataLoader) else source
    if isinstance(iterator, _MultiProcessingDataLoaderIter):  # the iterator that has worker processes
        _field(iterator, "_shutdown_workers")()
