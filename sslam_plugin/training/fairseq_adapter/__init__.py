"""The plugin's one adapter to fairseq's insides: replacements where fairseq has no extension point.

The task, model, criterion and launcher use fairseq's extension points
(registries through ``common.user_dir``, the hydra callback of the recipes).
What those cannot reach is replaced here, by :func:`install` only: the hydra
callback :class:`sslam_plugin.training.launch.LaunchCallback` calls it before
fairseq starts, and the launcher calls it in every process it starts (spawned
ranks, and the ranks of fairseq's own start-up). Importing the plugin changes
nothing in fairseq.

Correctness fixes (always installed):

* ``distributed_utils.call_main`` -> :func:`sslam_plugin.training.processes.call_main`:
  process start-up on any device count (CPU processes with gloo included), the
  run folder's lock and checkpoint choice, the launch settings.
* ``distributed_utils._broadcast_object_slow``, ``all_gather_list`` and
  ``models.DistributedFairseqModel`` (:mod:`.distributed`): checkpoint state
  sent to the other ranks under torch's safe loading, gathers and DDP on gloo (CPU).
* ``fairseq_cli.train.validate_and_save`` -> :func:`sslam_plugin.training.preemption.validate_and_save`:
  stop at an update boundary, with a checkpoint, on a preemption signal or Ctrl-C.
* ``_FP16OptimizerMixin.state_dict`` / ``load_state_dict`` (:mod:`.mixed_precision_state`):
  fp16/bf16 checkpoints keep the float32 master weights and the loss scaler's counters.
* ``EpochBatchIterator.state_dict`` / ``load_state_dict`` (:mod:`.iterator_position`):
  the epoch position carries over to another number of processes.
* ``Trainer.lr_step_update`` (:mod:`.lr_names`): each group's learning rate logged under a
  readable name (``lr_block_3``) instead of the composite optimizer's hashed key.

Speed replacements, bit-identical to fairseq's code on the CPU (:data:`SPEEDUPS_ENV`
switches them off): ``optim.adam.Adam.step`` (:mod:`.adam`), and the
mixed-precision bookkeeping: ``_FP16OptimizerMixin._sync_fp16_grads_to_fp32``,
``_sync_fp32_params_to_fp16``, ``zero_grad`` and ``utils.clip_grad_norm_``
(:mod:`.mixed_precision_speed`).

Each replaced original is pinned by a hash of its source (:mod:`.pins`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, Optional

from .. import preemption, processes
from . import adam, distributed, iterator_position, lr_names, mixed_precision_speed, mixed_precision_state
from .originals import original, owner_of, remember
from .pins import changed_sources

__all__ = ["install", "original", "speedups_from_env", "installed_speedups", "SPEEDUPS_ENV", "FIXES", "SPEEDUPS"]

logger = logging.getLogger(__name__)

SPEEDUPS_ENV = "SSLAM_FAIRSEQ_SPEEDUPS"
"""Environment variable: ``0`` runs fairseq's own Adam step, mixed-precision bookkeeping and
gradient clipping instead of the plugin's multi-tensor replacements (the way back to fairseq's
code path when a run misbehaves on some GPU); ``1`` (the default) uses the replacements. The
correctness fixes stay installed either way. Read in every process (ranks inherit it)."""
_TRUE, _FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def call_main(cfg: Any, main: Callable[..., Any], **kwargs: Any) -> Any:
    """``distributed_utils.call_main``: the plugin's launcher, which sets up each rank with :func:`install`."""
    return processes.call_main(cfg, main, fairseq_call_main=original("call_main"), rank_setup=install, **kwargs)


def validate_and_save(cfg: Any, trainer: Any, task: Any, epoch_itr: Any, valid_subsets: Any, end_of_epoch: bool) -> Any:
    """``fairseq_cli.train.validate_and_save``, stopping with a checkpoint on a stop signal."""
    return preemption.validate_and_save(original("validate_and_save"), cfg, trainer, task, epoch_itr,
                                        valid_subsets, end_of_epoch)


FIXES: Dict[str, Callable[..., Any]] = {
    "call_main": call_main,
    "_broadcast_object_slow": distributed.broadcast_object_slow,
    "all_gather_list": distributed.all_gather_list,
    "DistributedFairseqModel": distributed.distributed_model,
    "validate_and_save": validate_and_save,
    "_FP16OptimizerMixin.state_dict": mixed_precision_state.state_dict,
    "_FP16OptimizerMixin.load_state_dict": mixed_precision_state.load_state_dict,
    "EpochBatchIterator.state_dict": iterator_position.state_dict,
    "EpochBatchIterator.load_state_dict": iterator_position.load_state_dict,
    "Trainer.lr_step_update": lr_names.lr_step_update,
}
SPEEDUPS: Dict[str, Callable[..., Any]] = {
    "Adam.step": adam.foreach_step,
    "clip_grad_norm_": mixed_precision_speed.clip_grad_norm_,
    "_FP16OptimizerMixin._sync_fp16_grads_to_fp32": mixed_precision_speed.sync_fp16_grads_to_fp32,
    "_FP16OptimizerMixin._sync_fp32_params_to_fp16": mixed_precision_speed.sync_fp32_params_to_fp16,
    "_FP16OptimizerMixin.zero_grad": mixed_precision_speed.zero_grad,
}

_installed: Dict[str, Optional[bool]] = {"speedups": None}  # None: not installed in this process


def speedups_from_env(environ: Optional[Dict[str, str]] = None) -> bool:
    """:data:`SPEEDUPS_ENV` as a bool (default on).

    Raises:
        ValueError: a value other than 1/0 (true/false, on/off, yes/no); the message names the variable.
    """
    value = (os.environ if environ is None else environ).get(SPEEDUPS_ENV, "1").strip().lower()
    if value in _TRUE or value == "":
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{SPEEDUPS_ENV}={value!r}: use 1 (the plugin's multi-tensor Adam and mixed-precision "
                     "steps, the default) or 0 (fairseq's own code)")


def installed_speedups() -> Optional[bool]:
    """Whether the speed replacements are in place (None: :func:`install` has not run in this process)."""
    return _installed["speedups"]


def install(speedups: Optional[bool] = None) -> None:
    """Put the correctness fixes, and the speed replacements unless switched off, in place of fairseq's code.

    Args:
        speedups: True/False to choose; None reads :data:`SPEEDUPS_ENV` (default on).
            A later call switches them on or off again (the fixes stay).
    """
    if speedups is None:
        speedups = speedups_from_env()
    first = _installed["speedups"] is None
    for key, replacement in FIXES.items():
        _put(key, replacement)
    for key, replacement in SPEEDUPS.items():
        _put(key, replacement if speedups else None)
    if first or _installed["speedups"] != speedups:
        logger.info("fairseq adapter installed; speed replacements %s (%s=%d)",
                    "on" if speedups else "off: fairseq's own Adam and mixed-precision steps", SPEEDUPS_ENV, speedups)
    if first:
        for line in changed_sources():  # the pinned fairseq-fixed==0.12.3.1 is what they were written for
            logger.warning("%s", line)
    _installed["speedups"] = speedups


def _put(key: str, replacement: Optional[Callable[..., Any]]) -> None:
    """``replacement`` in place of fairseq's function for ``key``; None puts fairseq's back."""
    remember(key)
    owner, name = owner_of(key)
    setattr(owner, name, replacement if replacement is not None else original(key))
