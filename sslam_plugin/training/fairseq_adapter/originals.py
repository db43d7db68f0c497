"""fairseq's own functions that the adapter replaces: where each lives, and the original once replaced.

A replacement that needs fairseq's own function (to fall back to it, or to
wrap it) asks :func:`original` here; this module imports nothing of the plugin,
so every replacement can use it without an import circle.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Tuple

__all__ = ["TARGETS", "original", "owner_of", "remember", "replaced"]

# key -> (module, attribute path inside it): a module's function by its name, a method as "Class.method"
TARGETS: Dict[str, Tuple[str, str]] = {
    "call_main": ("fairseq.distributed.utils", "call_main"),
    "_broadcast_object_slow": ("fairseq.distributed.utils", "_broadcast_object_slow"),
    "all_gather_list": ("fairseq.distributed.utils", "all_gather_list"),
    "DistributedFairseqModel": ("fairseq.models", "DistributedFairseqModel"),
    "validate_and_save": ("fairseq_cli.train", "validate_and_save"),
    "_FP16OptimizerMixin.state_dict": ("fairseq.optim.fp16_optimizer", "_FP16OptimizerMixin.state_dict"),
    "_FP16OptimizerMixin.load_state_dict": ("fairseq.optim.fp16_optimizer", "_FP16OptimizerMixin.load_state_dict"),
    "EpochBatchIterator.state_dict": ("fairseq.data.iterators", "EpochBatchIterator.state_dict"),
    "EpochBatchIterator.load_state_dict": ("fairseq.data.iterators", "EpochBatchIterator.load_state_dict"),
    "Trainer.lr_step_update": ("fairseq.trainer", "Trainer.lr_step_update"),
    "Adam.step": ("fairseq.optim.adam", "Adam.step"),
    "clip_grad_norm_": ("fairseq.utils", "clip_grad_norm_"),
    "_FP16OptimizerMixin._sync_fp16_grads_to_fp32": (
        "fairseq.optim.fp16_optimizer", "_FP16OptimizerMixin._sync_fp16_grads_to_fp32"),
    "_FP16OptimizerMixin._sync_fp32_params_to_fp16": (
        "fairseq.optim.fp16_optimizer", "_FP16OptimizerMixin._sync_fp32_params_to_fp16"),
    "_FP16OptimizerMixin.zero_grad": ("fairseq.optim.fp16_optimizer", "_FP16OptimizerMixin.zero_grad"),
}

_REPLACED: Dict[str, Callable[..., Any]] = {}  # key -> fairseq's function, saved before the first replacement


def owner_of(key: str) -> Tuple[Any, str]:
    """(module or class, attribute name) that holds ``key``'s function in fairseq."""
    module_name, path = TARGETS[key]
    owner: Any = importlib.import_module(module_name)
    *classes, name = path.split(".")
    for cls in classes:
        owner = getattr(owner, cls)
    return owner, name


def remember(key: str) -> None:
    """Save fairseq's function for ``key`` (once: later calls keep the first, which is fairseq's)."""
    if key not in _REPLACED:
        owner, name = owner_of(key)
        _REPLACED[key] = getattr(owner, name)


def replaced(key: str) -> bool:
    """Whether the adapter has taken ``key``'s original (it may be switched back to it since)."""
    return key in _REPLACED


def original(key: str) -> Callable[..., Any]:
    """fairseq's own function for ``key`` (see :data:`TARGETS`), replaced or not."""
    if key in _REPLACED:
        return _REPLACED[key]
    owner, name = owner_of(key)
    return getattr(owner, name)
