"""Where in its epoch a resumed run continues, also when it resumes on another number of processes.

fairseq's epoch iterator saves ``iterations_in_epoch``: the batches one process
has taken, each process taking every ``num_shards``-th batch of the epoch. A
run preempted on 4 GPUs and requeued on 2 (or on 1 with gradient accumulation,
which the launcher sets up to keep the effective batch) would read that count
as its own and go back over part of the epoch. The training's random draws
depend on the clips of a batch, not on the process that takes it (a run on 2
processes equals one on 1 process with accumulation), so the position that
carries over is the number of batches the whole job has taken:
:func:`state_dict` records the process count beside fairseq's state and
:func:`load_state_dict` converts the count to the new one, logging the change.
A correctness fix: :func:`sslam_plugin.training.fairseq_adapter.install` puts both
on fairseq's ``EpochBatchIterator``. States without a process count (older checkpoints) load
as fairseq loads them.
"""

from __future__ import annotations

import logging
from typing import Any, Dict

from .originals import original

__all__ = ["state_dict", "load_state_dict", "NUM_SHARDS_KEY"]

logger = logging.getLogger(__name__)

NUM_SHARDS_KEY = "num_shards"


def state_dict(iterator: Any) -> Dict[str, Any]:
    """fairseq's iterator state plus the number of processes that shared the epoch."""
    state = original("EpochBatchIterator.state_dict")(iterator)
    state[NUM_SHARDS_KEY] = iterator.num_shards
    return state


def load_state_dict(iterator: Any, state: Dict[str, Any]) -> Any:
    """fairseq's load, with ``iterations_in_epoch`` converted to this job's number of processes."""
    state = dict(state)
    saved_shards = state.pop(NUM_SHARDS_KEY, None)
    position = state.get("iterations_in_epoch", 0)
    shards = iterator.num_shards
    if saved_shards is not None and saved_shards != shards and position > 0:
        taken = position * saved_shards  # batches of the epoch the whole job had taken
        state["iterations_in_epoch"] = taken // shards
        if taken % shards:
            logger.warning(
                "resuming epoch %d on %d processes after %d batches taken by %d: %d batches do not split "
                "evenly and are taken again", state.get("epoch", 0), shards, taken, saved_shards, taken % shards,
            )
        logger.info(
            "resuming epoch %d on %d processes instead of %d: batch %d of the epoch, %d per process",
            state.get("epoch", 0), shards, saved_shards, taken, state["iterations_in_epoch"],
        )
    return original("EpochBatchIterator.load_state_dict")(iterator, state)
