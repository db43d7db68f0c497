"""The plugin's replacements of fairseq functions, exercised by two gloo processes."""

from __future__ import annotations

import copy
import inspect
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


# ------------------------------------------------------------------ foreach Adam
def _adam_pair(**config):
    """Two fairseq Adams on equal parameters: one stepped by foreach_step, one by fairseq's own step."""
    from fairseq.optim.adam import Adam

    from sslam_plugin.training import adam, fairseq_compat

    fairseq_compat.install()
    # what the trainer's FairseqAdam now runs (torch wraps a step in a profiling hook once built)
    assert inspect.unwrap(Adam.step) is inspect.unwrap(adam.foreach_step)
    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (3, 4, 2), (1,)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]

    def groups(ps):  # with and without weight decay, as the recipes
        return [{"params": ps[:2], "weight_decay": 0.05}, {"params": ps[2:], "weight_decay": 0.0}]

    return ours, theirs, Adam(groups(ours), **config), Adam(groups(theirs), **config)


def _step_both(ours, theirs, opt_ours, opt_theirs, seed, skip=None):
    from sslam_plugin.training import adam

    generator = torch.Generator().manual_seed(seed)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        grad = torch.randn(a.shape, generator=generator)
        a.grad = None if i == skip else grad.clone()
        b.grad = None if i == skip else grad.clone()
    adam.foreach_step(opt_ours)
    adam.fairseq_step(opt_theirs)


def test_foreach_adam_is_fairseqs_adam_bit_for_bit_and_resumes():
    ours, theirs, opt_ours, opt_theirs = _adam_pair(lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    for seed in range(5):
        _step_both(ours, theirs, opt_ours, opt_theirs, seed)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
        assert torch.equal(opt_ours.state[a]["exp_avg_sq"], opt_theirs.state[b]["exp_avg_sq"])
        assert opt_ours.state[a]["step"] == opt_theirs.state[b]["step"] == 5
    assert not torch.equal(ours[0], theirs[0].detach() * 0)  # the parameters did move
    # a checkpoint of one loads into the other, and training goes on identically
    opt_ours.load_state_dict(copy.deepcopy(opt_theirs.state_dict()))  # load shares same-device tensors
    for seed in range(5, 8):
        _step_both(ours, theirs, opt_ours, opt_theirs, seed)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_foreach_adam_falls_back_where_it_cannot_batch():
    # amsgrad, and a parameter without a gradient (its step count falls behind)
    ours, theirs, opt_ours, opt_theirs = _adam_pair(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, amsgrad=True)
    for seed in range(3):
        _step_both(ours, theirs, opt_ours, opt_theirs, seed)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    ours, theirs, opt_ours, opt_theirs = _adam_pair(lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    _step_both(ours, theirs, opt_ours, opt_theirs, 0, skip=1)
    _step_both(ours, theirs, opt_ours, opt_theirs, 1)  # group 0 now holds steps 1 and 2
    assert {opt_ours.state[p]["step"] for p in ours[:2]} == {1, 2}
    _step_both(ours, theirs, opt_ours, opt_theirs, 2)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
