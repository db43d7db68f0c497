"""Correctness fixes of fairseq's process-group helpers: CPU processes (gloo) and torch's safe loading.

* ``_broadcast_object_slow``: ranks other than 0 receive the checkpoint state
  that rank 0 read; fairseq unpickles it with torch's default
  ``weights_only=True`` (torch >= 2.6), which refuses the config and fairseq's
  own placeholders inside. Rank 0 read the file with ``weights_only=True``;
  what it re-pickles for its peers is trusted.
* ``all_gather_list``: fairseq gathers through a CUDA byte buffer; on gloo
  (CPU) it uses ``torch.distributed.all_gather_object``.
* ``DistributedFairseqModel``: PyTorch's DDP takes no ``device_ids`` for CPU
  modules; fairseq always passes one.
"""

from __future__ import annotations

import io
from typing import Any, List, Optional

import torch
import torch.distributed as dist

from .originals import original

__all__ = ["broadcast_object_slow", "all_gather_list", "distributed_model"]


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
