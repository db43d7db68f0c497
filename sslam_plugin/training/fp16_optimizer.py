"""fairseq's mixed-precision optimiser: multi-tensor bookkeeping, and a checkpoint that resumes exactly.

The recipes train with fp16 (or bf16) and ``fp16_no_flatten_grads`` (the
composite optimiser needs per-parameter groups), so fairseq's ``FP16Optimizer``
keeps one float32 master copy per parameter and, every update, walks the ~200
tensors of a ViT-B one at a time four times: copying the half gradients into
the master gradients, taking each gradient's norm for the clip (without NVIDIA
apex), copying the master weights back into the half model and zeroing the
master gradients. That is some 800 small kernel launches per update, which on
a GPU cost milliseconds of launch overhead for almost no arithmetic.

The functions here do the same work with one ``torch._foreach_*`` call per
list: the same values in the same order, so on the CPU the weights, gradients,
norms and loss scale are bit-identical to fairseq's (tests/test_fairseq_compat.py).
On a GPU the gradient norm is reduced by one multi-tensor kernel, equal to
fairseq's per-tensor norms up to summation order.
:mod:`~sslam_plugin.training.fairseq_compat` installs them in place of
fairseq's; anything they do not cover (flat master weights, sparse or
expert gradients, gradients on several devices or of several precisions, apex
present) goes to fairseq's own function.

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
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import torch

__all__ = [
    "clip_grad_norm_", "sync_fp16_grads_to_fp32", "sync_fp32_params_to_fp16", "zero_grad",
    "state_dict", "load_state_dict", "MASTER_WEIGHTS_KEY", "LOSS_SCALER_KEY",
]

logger = logging.getLogger(__name__)

# keys added to the optimiser's state dict (beside fairseq's "loss_scale" and the optimisers' own)
MASTER_WEIGHTS_KEY = "fp32_master_weights"
LOSS_SCALER_KEY = "loss_scaler_counters"
_SCALER_COUNTERS = ("_iter", "_last_overflow_iter", "_last_rescale_iter", "_overflows_since_rescale")


def _fairseq(name: str) -> Callable[..., Any]:
    from . import fairseq_compat

    return fairseq_compat.original(name)


def _one_kind(tensors: List[torch.Tensor]) -> bool:
    """All on one device with one dtype and dense: one multi-tensor kernel takes them."""
    return len({(t.device, t.dtype) for t in tensors}) == 1 and not any(t.is_sparse for t in tensors)


def clip_grad_norm_(
    params: Union[torch.Tensor, Iterable[torch.Tensor]],
    max_norm: float,
    aggregate_norm_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> torch.Tensor:
    """``fairseq.utils.clip_grad_norm_``: the total L2 norm of the gradients, which are scaled to ``max_norm``.

    The per-tensor norms come from one ``torch._foreach_norm`` instead of a
    ``torch.norm`` per tensor (fairseq's path when apex is missing).
    """
    from fairseq import utils

    params = [params] if isinstance(params, torch.Tensor) else list(params)
    with_grad = [p for p in params if p is not None and getattr(p, "grad", None) is not None]
    grads = [p.grad.detach() for p in with_grad if not hasattr(p, "expert")]
    if len(grads) < 2 or len(grads) != len(with_grad) or utils.multi_tensor_l2norm_available or not _one_kind(grads):
        return _fairseq("clip_grad_norm_")(params, max_norm, aggregate_norm_fn)
    norms = torch._foreach_norm(grads, 2, dtype=torch.float32)
    total_norm = torch.norm(torch.stack(norms))
    if aggregate_norm_fn is not None:
        total_norm = aggregate_norm_fn(total_norm)
    if max_norm > 0:
        clip_coef = (float(max_norm) / (total_norm + 1e-6)).clamp_(max=1)
        torch._foreach_mul_(grads, clip_coef)
    return total_norm


def sync_fp16_grads_to_fp32(optimizer: Any) -> None:
    """``_FP16OptimizerMixin._sync_fp16_grads_to_fp32``: copy the model's gradients into the master ones."""
    if not optimizer._needs_sync:
        return
    if optimizer.has_flat_params:
        return _fairseq("_FP16OptimizerMixin._sync_fp16_grads_to_fp32")(optimizer)
    sources, targets = [], []
    for p, p32 in zip(optimizer.fp16_params, optimizer.fp32_params):
        if not p.requires_grad:
            continue
        if p.grad is None:  # a parameter the loss did not reach: a zero gradient, as fairseq
            p32.grad = torch.zeros_like(p.data, dtype=torch.float)
        elif p32.grad is None:
            p32.grad = p.grad.data.float()
        else:
            sources.append(p.grad.data)
            targets.append(p32.grad.data)
    _copy(targets, sources)
    optimizer._needs_sync = False


def sync_fp32_params_to_fp16(optimizer: Any) -> None:
    """``_FP16OptimizerMixin._sync_fp32_params_to_fp16``: copy the master weights into the model."""
    if optimizer.has_flat_params:
        return _fairseq("_FP16OptimizerMixin._sync_fp32_params_to_fp16")(optimizer)
    pairs = [(p.data, p32.data) for p, p32 in zip(optimizer.fp16_params, optimizer.fp32_params) if p.requires_grad]
    _copy([p for p, _ in pairs], [p32 for _, p32 in pairs])


def zero_grad(optimizer: Any) -> None:
    """``_FP16OptimizerMixin.zero_grad``: drop the model's gradients, zero the master ones."""
    if optimizer.has_flat_params:
        return _fairseq("_FP16OptimizerMixin.zero_grad")(optimizer)
    for p in optimizer.fp16_params:
        p.grad = None
    grads = [p32.grad for p32 in optimizer.fp32_params if p32.grad is not None]
    if grads:
        torch._foreach_zero_(grads)
    optimizer._needs_sync = False
    if optimizer.scaler is not None:
        optimizer._multiply_factor = 1.0 / float(optimizer.scaler.loss_scale)


def _copy(targets: List[torch.Tensor], sources: List[torch.Tensor]) -> None:
    """``targets[i].copy_(sources[i])`` for all i, in one multi-tensor kernel per (device, dtype) pair."""
    if not targets:
        return
    if _one_kind(targets) and _one_kind(sources):
        torch._foreach_copy_(targets, sources)
        return
    for target, source in zip(targets, sources):
        target.copy_(source)


def _master_weights(optimizer: Any) -> List[torch.Tensor]:
    """The float32 master tensors: one per parameter, or fairseq's flat buffers (one per device)."""
    fp32 = optimizer.fp32_params
    if torch.is_tensor(fp32):
        return [fp32.data]
    if isinstance(fp32, dict):
        return [t.data for t in fp32.values()]
    return [p32.data for p32 in fp32]


def state_dict(optimizer: Any) -> Dict[str, Any]:
    """``_FP16OptimizerMixin.state_dict`` plus the master weights and the loss scaler's counters."""
    state = _fairseq("_FP16OptimizerMixin.state_dict")(optimizer)
    state[MASTER_WEIGHTS_KEY] = _master_weights(optimizer)
    if optimizer.scaler is not None:
        state[LOSS_SCALER_KEY] = {name: getattr(optimizer.scaler, name) for name in _SCALER_COUNTERS}
    return state


def load_state_dict(optimizer: Any, state: Dict[str, Any], optimizer_overrides: Optional[Dict[str, Any]] = None) -> None:
    """``_FP16OptimizerMixin.load_state_dict``, then the saved master weights and scaler counters, if any."""
    state = dict(state)
    saved = state.pop(MASTER_WEIGHTS_KEY, None)
    counters = state.pop(LOSS_SCALER_KEY, None)
    _fairseq("_FP16OptimizerMixin.load_state_dict")(optimizer, state, optimizer_overrides)
    if counters is not None and optimizer.scaler is not None:
        for name, value in counters.items():
            setattr(optimizer.scaler, name, value)
    if saved is None:
        return
    current = _master_weights(optimizer)
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
