"""A mixed-precision checkpoint that resumes exactly (a correctness fix of fairseq's ``FP16Optimizer``).

fairseq's checkpoint holds the half-precision model and the optimiser's
moments but not the float32 master weights, nor the dynamic loss scaler's
counters: a resumed run rebuilt its master weights by rounding, and restarted
the loss scale's growth window, so from the first update after a resume it
drifted from the run that was never stopped (bf16 on the CPU: the loss at the
second update after the resume differed in the third digit). :func:`state_dict`
adds both to the optimiser's state, and :func:`load_state_dict` puts them back,
so a preempted fp16/bf16 run continues exactly as if it had not stopped.
Checkpoints without them (older ones, fairseq's) load as before.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import torch

from .originals import original

__all__ = ["state_dict", "load_state_dict", "master_weights", "MASTER_WEIGHTS_KEY", "LOSS_SCALER_KEY"]

logger = logging.getLogger(__name__)

# keys added to the optimiser's state dict (beside fairseq's "loss_scale" and the optimisers' own)
MASTER_WEIGHTS_KEY = "fp32_master_weights"
LOSS_SCALER_KEY = "loss_scaler_counters"
# fairseq's DynamicLossScaler keeps its growth window in these (pinned with the adapter's originals)
SCALER_COUNTERS = ("_iter", "_last_overflow_iter", "_last_rescale_iter", "_overflows_since_rescale")


def master_weights(optimizer: Any) -> List[torch.Tensor]:
    """The float32 master tensors: one per parameter, or fairseq's flat buffers (one per device)."""
    fp32 = optimizer.fp32_params
    if torch.is_tensor(fp32):
        return [fp32.data]
    if isinstance(fp32, dict):
        return [t.data for t in fp32.values()]
    return [p32.data for p32 in fp32]


def _scaler_counters(scaler: Any) -> Dict[str, Any]:
    missing = [name for name in SCALER_COUNTERS if not hasattr(scaler, name)]
    if missing:  # a renamed field would otherwise be saved and restored as nothing
        raise AttributeError(f"fairseq's {type(scaler).__name__} has no {', '.join(missing)}: review "
                             "sslam_plugin.training.fairseq_adapter.mixed_precision_state.SCALER_COUNTERS")
    return {name: getattr(scaler, name) for name in SCALER_COUNTERS}


def state_dict(optimizer: Any) -> Dict[str, Any]:
    """``_FP16OptimizerMixin.state_dict`` plus the master weights and the loss scaler's counters."""
    state = original("_FP16OptimizerMixin.state_dict")(optimizer)
    state[MASTER_WEIGHTS_KEY] = master_weights(optimizer)
    if optimizer.scaler is not None:
        state[LOSS_SCALER_KEY] = _scaler_counters(optimizer.scaler)
    return state


def load_state_dict(optimizer: Any, state: Dict[str, Any], optimizer_overrides: Optional[Dict[str, Any]] = None) -> None:
    """``_FP16OptimizerMixin.load_state_dict``, then the saved master weights and scaler counters, if any."""
    state = dict(state)
    saved = state.pop(MASTER_WEIGHTS_KEY, None)
    counters = state.pop(LOSS_SCALER_KEY, None)
    original("_FP16OptimizerMixin.load_state_dict")(optimizer, state, optimizer_overrides)
    if counters is not None and optimizer.scaler is not None:
        _scaler_counters(optimizer.scaler)  # the fields are still there
        for name, value in counters.items():
            setattr(optimizer.scaler, name, value)
    if saved is None:
        return
    current = master_weights(optimizer)
    if len(saved) != len(current) or any(a.shape != b.shape for a, b in zip(saved, current)):
        # another model or parameter grouping: keep the master weights rebuilt from the model
        logger.warning(
            "the checkpoint's float32 master weights (%d tensors) do not match this model's (%d); "
            "using the model's weights instead", len(saved), len(current),
        )
        return
    with torch.no_grad():
        for target, source in zip(current, saved):
            target.copy_(source)
