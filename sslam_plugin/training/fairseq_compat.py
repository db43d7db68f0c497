"""The few places where fairseq itself needs a fix for this plugin's training system.

Each is a replacement of one fairseq function, installed once per process by
:func:`install` (on import of ``sslam_plugin.training``, by the launcher in
every process it starts, and by the hydra callback before fairseq spawns):

* ``distributed_utils.call_main`` -> :func:`sslam_plugin.training.launch.call_main`:
  process start-up on any device count (CPU processes with gloo included),
  the run folder's checkpoint choice, the effective batch.
* ``distributed_utils._broadcast_object_slow``: ranks other than 0 receive
  the checkpoint state that rank 0 read; fairseq unpickles it with torch's
  default ``weights_only=True`` (torch >= 2.6), which refuses the config and
  fairseq's own placeholders inside. Rank 0 read the file with
  ``weights_only=True``; what it re-pickles for its peers is trusted.
* ``distributed_utils.all_gather_list``: fairseq gathers through a CUDA byte
  buffer; on gloo (CPU) it uses ``torch.distributed.all_gather_object``.
* ``models.DistributedFairseqModel``: PyTorch's DDP takes no ``device_ids``
  for CPU modules; fairseq always passes one.
* ``fairseq_cli.train.validate_and_save``: stops at an update boundary,
  after saving a checkpoint, when a preemption or time-limit signal arrived
  (:mod:`sslam_plugin.training.preemption`).
* ``optim.adam.Adam.step`` -> :func:`sslam_plugin.training.adam.foreach_step`:
  the same update with one multi-tensor kernel per line and parameter group
  instead of ten kernels per parameter (bit-identical on the CPU).
* ``optim.fp16_optimizer._FP16OptimizerMixin``'s gradient and weight copies
  and ``zero_grad``, and ``utils.clip_grad_norm_`` ->
  :mod:`sslam_plugin.training.fp16_optimizer`: the master-weight bookkeeping
  of a mixed-precision update as multi-tensor kernels instead of four loops
  over the parameters (bit-identical on the CPU); its ``state_dict`` and
  ``load_state_dict`` also keep the float32 master weights and the loss
  scaler's counters, so an fp16/bf16 run resumes exactly.
* ``data.iterators.EpochBatchIterator.state_dict`` / ``load_state_dict`` ->
  :mod:`sslam_plugin.training.iterator_position`: the epoch position carries
  over when a run resumes on another number of processes.
"""

from __future__ import annotations

import io
import logging
import types
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.distributed as dist

__all__ = ["install", "original"]

logger = logging.getLogger(__name__)

_ORIGINALS: Dict[str, Callable[..., Any]] = {}


def original(name: str) -> Callable[..., Any]:
    """fairseq's own function that :func:`install` replaced: ``"call_main"``, or ``"Class.method"``."""
    return _ORIGINALS[name]


def install() -> None:
    """Install the replacements (idempotent)."""
    if _ORIGINALS:
        return
    import fairseq.models as fairseq_models
    import fairseq.optim.adam as fairseq_adam
    import fairseq.optim.fp16_optimizer as fairseq_fp16
    import fairseq.utils as fairseq_utils
    import fairseq_cli.train as fairseq_train
    from fairseq.data.iterators import EpochBatchIterator
    from fairseq.distributed import utils as distributed_utils

    from . import launch, preemption
    from . import adam, fp16_optimizer, iterator_position

    replacements = (
        (distributed_utils, "call_main", launch.call_main),
        (distributed_utils, "_broadcast_object_slow", broadcast_object_slow),
        (distributed_utils, "all_gather_list", all_gather_list),
        (fairseq_models, "DistributedFairseqModel", distributed_model),
        (fairseq_train, "validate_and_save", preemption.validate_and_save),
        (fairseq_adam.Adam, "step", adam.foreach_step),
        (fairseq_utils, "clip_grad_norm_", fp16_optimizer.clip_grad_norm_),
        (fairseq_fp16._FP16OptimizerMixin, "_sync_fp16_grads_to_fp32", fp16_optimizer.sync_fp16_grads_to_fp32),
        (fairseq_fp16._FP16OptimizerMixin, "_sync_fp32_params_to_fp16", fp16_optimizer.sync_fp32_params_to_fp16),
        (fairseq_fp16._FP16OptimizerMixin, "zero_grad", fp16_optimizer.zero_grad),
        (fairseq_fp16._FP16OptimizerMixin, "state_dict", fp16_optimizer.state_dict),
        (fairseq_fp16._FP16OptimizerMixin, "load_state_dict", fp16_optimizer.load_state_dict),
        (EpochBatchIterator, "state_dict", iterator_position.state_dict),
        (EpochBatchIterator, "load_state_dict", iterator_position.load_state_dict),
    )
    for owner, name, replacement in replacements:
        # a module's function by its name, a class's method as "Class.method"
        key = name if isinstance(owner, types.ModuleType) else f"{owner.__name__}.{name}"
        _ORIGINALS[key] = getattr(owner, name)
        setattr(owner, name, replacement)
    # fairseq_cli.hydra_train imported the module under another name; it is the same object.
    logger.debug("installed fairseq replacements: %s", sorted(_ORIGINALS))


def broadcast_object_slow(obj: Any, src_rank: int, group: Any, dist_device: torch.device) -> Any:
    """Send a picklable object from ``src_rank`` to the group: its length, then its bytes."""
    from fairseq.distributed import utils as distributed_utils

    if distributed_utils.get_rank(group) == src_rank:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8).to(dist_device)
        length = torch.tensor([payload.numel()], dtype=torch.long, device=dist_device)
        distributed_utils.broadcast(length, src=src_rank, group=group)
        distributed_utils.broadcast(payload, src=src_rank, group=group)
        return obj
    length = torch.zeros(1, dtype=torch.long, device=dist_device)
    distributed_utils.broadcast(length, src=src_rank, group=group)
    payload = torch.empty(int(length.item()), dtype=torch.uint8, device=dist_device)
    distributed_utils.broadcast(payload, src=src_rank, group=group)
    # The sender is rank 0 of this job, re-pickling what it loaded with weights_only=True.
    return torch.load(io.BytesIO(payload.cpu().numpy().tobytes()), map_location="cpu", weights_only=False)


def all_gather_list(data: Any, group: Any = None, max_size: int = 16384) -> List[Any]:
    """Gather one picklable object from every rank (fairseq's function, also on gloo)."""
    from fairseq import utils
    from fairseq.distributed import utils as distributed_utils

    if group is None:
        group = distributed_utils.get_global_group()
    if dist.get_backend(group) == "nccl":
        return original("all_gather_list")(data, group=group, max_size=max_size)
    gathered: List[Optional[Any]] = [None] * distributed_utils.get_world_size(group)
    dist.all_gather_object(gathered, utils.move_to_cpu(data), group=group)
    return gathered


def distributed_model(args: Any, model: torch.nn.Module, process_group: Any, device: torch.device) -> torch.nn.Module:
    """fairseq's data-parallel wrapper; PyTorch DDP without ``device_ids`` for CPU modules."""
    if device.type != "cpu" or args.ddp_backend not in ("c10d", "pytorch_ddp"):
        return original("DistributedFairseqModel")(args, model, process_group, device)
    from fairseq.distributed import ModuleProxyWrapper
    from torch.nn.parallel import DistributedDataParallel

    wrapped = DistributedDataParallel(
        module=model.to(device),
        broadcast_buffers=args.broadcast_buffers,
        bucket_cap_mb=args.bucket_cap_mb,
        process_group=process_group,
        find_unused_parameters=args.find_unused_parameters,
        gradient_as_bucket_view=args.gradient_as_bucket_view,
    )
    return ModuleProxyWrapper(wrapped)
