"""fairseq's Adam step with multi-tensor (foreach) kernels: the same arithmetic, far fewer launches.

The recipes train with fp16 and ``fp16_no_flatten_grads`` (the composite
optimiser needs per-parameter groups), so fairseq's ``Adam.step`` walks the
~200 parameter tensors of a ViT-B one at a time, about ten small kernels each:
some two thousand launches per update, which on a GPU cost more than the
arithmetic. :func:`foreach_step` does each line of fairseq's update for a whole
parameter group in one ``torch._foreach_*`` call, in the same order with the
same scalars (decoupled weight decay, ``eps`` added to ``sqrt(v)`` before the
bias correction of the step size), so on the CPU it is bit-identical to
fairseq's (tests/test_fairseq_compat.py) and the optimizer state is the same.
A speed replacement: :func:`sslam_plugin.training.fairseq_adapter.install` puts it in
place of ``Adam.step`` unless ``SSLAM_FAIRSEQ_SPEEDUPS=0``.

Groups it cannot take unchanged (amsgrad, sparse or low-precision tensors,
parameters at different step counts, tensors on several devices) go through
fairseq's own per-parameter step.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional

import torch

from .originals import original

__all__ = ["foreach_step", "fairseq_step"]


def fairseq_step(optimizer: torch.optim.Optimizer, closure: Optional[Callable[[], Any]] = None) -> Any:
    """fairseq's own ``Adam.step``, replaced or not."""
    return original("Adam.step")(optimizer, closure)


@torch.no_grad()
def foreach_step(optimizer: torch.optim.Optimizer, closure: Optional[Callable[[], Any]] = None) -> Any:
    """One update of every parameter group of a ``fairseq.optim.adam.Adam``."""
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        if _takes_foreach(optimizer, group, params):
            _foreach_group_step(optimizer, group, params)
        else:
            _per_parameter_step(optimizer, group)
    return loss


def _takes_foreach(optimizer: torch.optim.Optimizer, group: Dict[str, Any], params: List[torch.Tensor]) -> bool:
    if group.get("amsgrad", False):
        return False
    steps = {optimizer.state[p].get("step", 0) for p in params}
    devices = {p.device for p in params}
    return len(steps) == 1 and len(devices) == 1 and all(
        p.dtype == torch.float32 and p.grad.dtype == torch.float32 and not p.grad.is_sparse for p in params
    )


def _per_parameter_step(optimizer: torch.optim.Optimizer, group: Dict[str, Any]) -> None:
    # fairseq's own step, for this group only
    groups = optimizer.param_groups
    optimizer.param_groups = [group]
    try:
        fairseq_step(optimizer)
    finally:
        optimizer.param_groups = groups


def _foreach_group_step(optimizer: torch.optim.Optimizer, group: Dict[str, Any], params: List[torch.Tensor]) -> None:
    for p in params:
        state = optimizer.state[p]
        if len(state) == 0:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        elif state["exp_avg"].device != p.device or state["exp_avg"].dtype != p.dtype:
            state["exp_avg"] = state["exp_avg"].to(p)  # a state loaded on another device
            state["exp_avg_sq"] = state["exp_avg_sq"].to(p)
        state["step"] += 1
    data = [p.data for p in params]
    grads = [p.grad for p in params]
    exp_avgs = [optimizer.state[p]["exp_avg"] for p in params]
    exp_avg_sqs = [optimizer.state[p]["exp_avg_sq"] for p in params]
    beta1, beta2 = group["betas"]
    step = optimizer.state[params[0]]["step"]

    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denoms, group["eps"])

    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = group["lr"] * math.sqrt(bias_correction2) / bias_correction1
    if group["weight_decay"] != 0:
        torch._foreach_add_(data, data, alpha=-group["weight_decay"] * group["lr"])
    torch._foreach_addcdiv_(data, exp_avgs, denoms, value=-step_size)
