"""The plugin's replacements of fairseq functions, exercised by two gloo processes."""

from __future__ import annotations

import socket
from argparse import Namespace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("fairseq")


def _two_ranks(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from fairseq import models
    from fairseq.distributed import utils as distributed_utils
    from omegaconf import DictConfig, OmegaConf

    import sslam_plugin.training  # noqa: F401  (installs the replacements)
    from sslam_plugin.training import preemption

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    group = distributed_utils.get_global_group()
    cpu = torch.device("cpu")

    # resuming: rank 0 loaded the checkpoint; the others receive it, config included
    state = {"cfg": OmegaConf.create({"model": {"_name": "sslam_pretraining"}}), "w": torch.arange(3.0)} if rank == 0 else None
    received = distributed_utils.broadcast_object(state, src_rank=0, group=group, dist_device=cpu)
    gathered = distributed_utils.all_gather_list({"rank": rank}, group=group)

    # DDP on CPU modules averages the gradients of the ranks
    torch.manual_seed(0)
    module = torch.nn.Linear(2, 1)
    args = Namespace(tpu=False, ddp_backend="c10d", broadcast_buffers=False, bucket_cap_mb=25,
                     find_unused_parameters=False, gradient_as_bucket_view=False, ddp_comm_hook="none")
    wrapped = models.DistributedFairseqModel(args, module, group, cpu)
    wrapped(torch.full((1, 2), float(rank + 1))).sum().backward()

    preemption._requested = "SIGUSR2" if rank == 1 else None
    trainer = SimpleNamespace(data_parallel_world_size=2, device=cpu, data_parallel_process_group=group)
    agreed = preemption.stop_requested(trainer)

    torch.save(
        {
            "cfg_is_dictconfig": isinstance(received["cfg"], DictConfig),
            "model_name": received["cfg"].model._name,
            "w": received["w"],
            "gathered": gathered,
            "grad": module.weight.grad.clone(),
            "stop": agreed,
        },
        Path(out_dir) / f"rank{rank}.pt",
    )
    dist.destroy_process_group()
    from sslam_plugin.training.launch import exit_now

    exit_now(0)  # as the launcher's ranks do: gloo's teardown at interpreter exit can abort


def test_broadcast_gather_ddp_and_stop_agreement_on_gloo(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_two_ranks, args=(port, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for result in results:
        assert result["cfg_is_dictconfig"] and result["model_name"] == "sslam_pretraining"
        assert torch.equal(result["w"], torch.arange(3.0))
        assert result["gathered"] == [{"rank": 0}, {"rank": 1}]
        # d/dw sum(w.x + b) = x; the mean of x = 1 and x = 2 over the ranks
        assert torch.allclose(result["grad"], torch.full((1, 2), 1.5))
        assert result["stop"]  # rank 1's signal stops both
