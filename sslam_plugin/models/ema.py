"""The EMA teacher: a float32 copy of the encoder that follows the student.

The decay is a pure function of the update number, so resuming a run needs no
replay; the weights stay float32 even when the student is cast to fp16/bf16.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

__all__ = ["ema_decay_at", "EMATeacher"]


def ema_decay_at(update: int, start: float, end: float, anneal_end_step: int) -> float:
    """Decay linearly annealed from ``start`` to ``end`` over ``anneal_end_step`` updates."""
    if anneal_end_step <= 0 or update >= anneal_end_step:
        return end
    return end - (end - start) * (1.0 - update / anneal_end_step)


class EMATeacher(nn.Module):
    """Holds ``encoder``, an EMA of a student module with the same parameter names.

    Device moves apply to it, dtype casts do not: ``model.half()`` leaves the
    teacher in float32 (its small updates would vanish in fp16).
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.encoder = copy.deepcopy(student).float()
        self.encoder.requires_grad_(False)

    def _apply(self, fn, recurse: bool = True):
        probe = fn(torch.zeros((), device=self._device()))
        for tensor in list(self.encoder.parameters()) + list(self.encoder.buffers()):
            tensor.data = tensor.data.to(device=probe.device)
        return self

    def _device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def train(self, mode: bool = True):
        # The teacher always runs in eval mode: no dropout, no stochastic depth.
        super().train(False)
        return self

    @torch.no_grad()
    def update(self, student: nn.Module, decay: float, foreach: bool = False) -> None:
        """``teacher = decay * teacher + (1 - decay) * student`` for every parameter.

        ``foreach``: the same two operations as multi-tensor kernels (a handful
        of launches instead of two per parameter); bit for bit the same values.
        """
        if foreach:
            self._update_foreach(student, decay)
            return
        student_params = dict(student.named_parameters())
        for name, param in self.encoder.named_parameters():
            src = student_params[name].detach().to(device=param.device, dtype=torch.float32)
            param.mul_(decay).add_(src, alpha=1.0 - decay)
        student_buffers = dict(student.named_buffers())
        for name, buf in self.encoder.named_buffers():
            buf.copy_(student_buffers[name])

    def _update_foreach(self, student: nn.Module, decay: float) -> None:
        student_params = dict(student.named_parameters())
        names = [name for name, _ in self.encoder.named_parameters()]
        teacher = [param for _, param in self.encoder.named_parameters()]
        # fp16/bf16 students are cast to the teacher's float32 first, as the loop does
        source = [student_params[name].detach().to(device=t.device, dtype=torch.float32) for name, t in zip(names, teacher)]
        torch._foreach_mul_(teacher, decay)
        torch._foreach_add_(teacher, source, alpha=1.0 - decay)
        student_buffers = dict(student.named_buffers())
        buffers = [(buf, student_buffers[name]) for name, buf in self.encoder.named_buffers()]
        if buffers:
            torch._foreach_copy_([b for b, _ in buffers], [s for _, s in buffers])
