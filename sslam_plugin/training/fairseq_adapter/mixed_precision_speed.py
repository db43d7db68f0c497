"""fairseq's mixed-precision bookkeeping as multi-tensor kernels (a speed replacement).

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
fairseq's per-tensor norms up to summation order. Anything they do not cover
(flat master weights, sparse or expert gradients, gradients on several devices
or of several precisions, apex present) goes to fairseq's own function.
:func:`sslam_plugin.training.fairseq_adapter.install` puts them in place of
fairseq's unless ``SSLAM_FAIRSEQ_SPEEDUPS=0``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Union

import torch

from .originals import original

__all__ = ["clip_grad_norm_", "sync_fp16_grads_to_fp32", "sync_fp32_params_to_fp16", "zero_grad"]


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
        return original("clip_grad_norm_")(params, max_norm, aggregate_norm_fn)
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
        return original("_FP16OptimizerMixin._sync_fp16_grads_to_fp32")(optimizer)
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
        return original("_FP16OptimizerMixin._sync_fp32_params_to_fp16")(optimizer)
    pairs = [(p.data, p32.data) for p, p32 in zip(optimizer.fp16_params, optimizer.fp32_params) if p.requires_grad]
    _copy([p for p, _ in pairs], [p32 for _, p32 in pairs])


def zero_grad(optimizer: Any) -> None:
    """``_FP16OptimizerMixin.zero_grad``: drop the model's gradients, zero the master ones."""
    if optimizer.has_flat_params:
        return original("_FP16OptimizerMixin.zero_grad")(optimizer)
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
