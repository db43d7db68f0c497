"""Closing fairseq's batch iterators (sslam_plugin.training.data_loading): workers and prefetch thread end,
and a field fairseq or PyTorch renamed is an error naming it, not a silent no-op."""

from __future__ import annotations

import threading

import pytest
import torch

pytest.importorskip("fairseq")

from sslam_plugin.training.data_loading import close_batch_iterator  # noqa: E402


class Items(torch.utils.data.Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, index):
        return index


def epoch_iterator(workers: int, buffer_size: int):
    from fairseq.data import iterators

    return iterators.EpochBatchIterator(
        dataset=Items(), collate_fn=lambda items: items, batch_sampler=[[2 * i, 2 * i + 1] for i in range(16)],
        seed=1, num_workers=workers, buffer_size=buffer_size, persistent_workers=True, epoch=1,
    )


def test_closing_ends_the_workers_and_the_prefetch_thread():
    epoch_itr = epoch_iterator(workers=2, buffer_size=4)
    itr = epoch_itr.next_epoch_itr(shuffle=False)
    assert next(itr) == [0, 1]
    buffered = itr._itr
    workers = list(buffered._iterable._iterator._workers)  # the DataLoader's persistent worker processes
    consumer = buffered._consumer
    assert workers and all(w.is_alive() for w in workers) and consumer.is_alive()
    close_batch_iterator(epoch_itr)
    for worker in workers:
        worker.join(timeout=30)
    assert not any(w.is_alive() for w in workers)
    assert not consumer.is_alive() and buffered._consumer is None
    assert consumer not in threading.enumerate()


def test_a_renamed_field_is_an_error_naming_it(monkeypatch):
    from fairseq.data.iterators import BufferedIterator

    epoch_itr = epoch_iterator(workers=0, buffer_size=2)
    itr = epoch_itr.next_epoch_itr(shuffle=False)
    next(itr)
    assert isinstance(itr._itr, BufferedIterator)
    consumer = itr._itr._consumer
    del itr._itr._consumer  # as if fairseq had renamed it
    with pytest.raises(AttributeError, match=r"fairseq\.data\.iterators\.BufferedIterator has no field '_consumer' "
                                             r"any more.*review sslam_plugin\.training\.data_loading"):
        close_batch_iterator(epoch_itr)
    # put it back and close, so that no prefetch thread outlives this test (later tests count them)
    itr._itr._consumer = consumer
    close_batch_iterator(epoch_itr)
    assert not consumer.is_alive()
