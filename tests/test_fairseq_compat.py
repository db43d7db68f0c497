"""The fairseq adapter's replacements (sslam_plugin.training.fairseq_adapter), some exercised by two gloo processes."""

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

    from sslam_plugin.training import preemption
    from sslam_plugin.training.fairseq_adapter import install

    install()  # what the launcher does in every rank

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
    from sslam_plugin.training.rank import exit_now

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

    from sslam_plugin.training.fairseq_adapter import adam, install

    install(speedups=True)
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
    from sslam_plugin.training.fairseq_adapter import adam

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


# ------------------------------------------------- mixed-precision bookkeeping
_FP16_STATE = ("state_dict", "load_state_dict")


def _mixed_precision_run(dtype, fairseqs_own, monkeypatch, steps=6, resume_at=None):
    """A trainer's update sequence on a small half model through fairseq's FP16Optimizer.

    ``fairseqs_own``: fairseq's own code throughout (the speed replacements switched
    off, and fairseq's checkpoint state); otherwise the adapter's.

    With ``resume_at``, the model and optimiser are saved after that many steps
    (through ``torch.save`` / ``torch.load(weights_only=True)``, as a checkpoint),
    rebuilt from scratch, loaded and stepped on. Returns everything the run leaves
    behind: half and master weights, gradient norms, loss scales and the Adam state.
    """
    import io

    from fairseq import optim, utils
    from fairseq.optim import fp16_optimizer
    from omegaconf import OmegaConf

    from sslam_plugin.training.fairseq_adapter import install, original

    install(speedups=not fairseqs_own)
    bf16 = dtype == torch.bfloat16
    cfg = OmegaConf.create({
        "common": {"fp16_no_flatten_grads": True, "bf16": bf16, "fp16_init_scale": 4, "fp16_scale_window": 2,
                   "fp16_scale_tolerance": 0.0, "threshold_loss_scale": None, "min_loss_scale": 1e-4,
                   "model_parallel_size": 1},
        "optimization": {"update_freq": [1], "lr": [1e-2]},
        "distributed_training": {"distributed_world_size": 1},
        "optimizer": {"_name": "adam", "adam_betas": "(0.9, 0.98)", "adam_eps": 1e-6, "weight_decay": 0.01,
                      "lr": [1e-2], "use_old_adam": False, "fp16_adam_stats": False, "tpu": False},
    })

    def build():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
        model.unused = torch.nn.Linear(3, 3)  # no gradient reaches it: fairseq gives it a zero one
        model[0].bias.requires_grad_(False)
        model = model.to(dtype)
        params = [p for p in model.parameters() if p.requires_grad or p is model[0].bias]
        return model, optim.FP16Optimizer.build_optimizer(cfg, params)

    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(8, 6, generator=generator).to(dtype) for _ in range(steps)]
    with monkeypatch.context() as patch:
        if fairseqs_own:  # the speed replacements are off; the checkpoint state is fairseq's too
            for name in _FP16_STATE:
                patch.setattr(fp16_optimizer._FP16OptimizerMixin, name, original(f"_FP16OptimizerMixin.{name}"))
            assert utils.clip_grad_norm_ is original("clip_grad_norm_")
        model, opt = build()
        norms, scales = [], []
        for step in range(steps):
            if step == resume_at:
                buffer = io.BytesIO()
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
                buffer.seek(0)
                saved = torch.load(buffer, weights_only=True)
                model, opt = build()  # a new process: weights from the checkpoint's half model
                model.load_state_dict(saved["model"])
                opt = optim.FP16Optimizer.build_optimizer(cfg, [p for p in opt.fp16_params])
                opt.load_state_dict(saved["optimizer"])
            opt.zero_grad()
            loss = model(inputs[step]).float().pow(2).sum() * (10.0 if step == 3 else 1.0)
            opt.backward(loss)
            opt.multiply_grads(1 / 8)
            norms.append(opt.clip_grad_norm(0.5 if step % 2 else 0.0))  # clipped on odd steps
            opt.step()
            scales.append(None if opt.scaler is None else opt.scaler.loss_scale)
        state = [s for group in opt.fp32_optimizer.optimizer.state.values() for s in group.values()
                 if torch.is_tensor(s)]
    return [p.detach().clone() for p in model.parameters()], [p.detach().clone() for p in opt.fp32_params], \
        norms, scales, state


def _assert_same_run(run_a, run_b):
    half_a, master_a, norms_a, scales_a, state_a = run_a
    half_b, master_b, norms_b, scales_b, state_b = run_b
    assert len(state_a) == len(state_b) and len(half_a) == len(half_b)
    for a, b in zip(half_a + master_a + norms_a + state_a, half_b + master_b + norms_b + state_b):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert scales_a == scales_b


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_bookkeeping_is_fairseqs_bit_for_bit(dtype, monkeypatch):
    from fairseq import utils
    from fairseq.optim import fp16_optimizer

    from sslam_plugin.training.fairseq_adapter import mixed_precision_speed as ours

    ours_run = _mixed_precision_run(dtype, False, monkeypatch)
    assert utils.clip_grad_norm_ is ours.clip_grad_norm_  # what the trainer calls
    assert fp16_optimizer._FP16OptimizerMixin.zero_grad is ours.zero_grad
    fairseq_run = _mixed_precision_run(dtype, True, monkeypatch)
    assert fp16_optimizer._FP16OptimizerMixin.zero_grad is not ours.zero_grad
    _assert_same_run(ours_run, fairseq_run)
    half_a, _, _, scales_a, state_a = ours_run
    # exp_avg and exp_avg_sq of all 8 master tensors: fairseq steps the unused layer with a zero
    # gradient and keeps a master copy of the frozen bias (never copied back into the model)
    assert len(state_a) == 2 * 8
    if dtype == torch.float16:
        assert scales_a[-1] != scales_a[0]  # the dynamic loss scale moved (grew every 2 steps)
    # the frozen bias kept its value, the trained weights moved
    start = _mixed_precision_run(dtype, False, monkeypatch, steps=0)[0]
    assert torch.equal(half_a[1], start[1]) and not torch.equal(half_a[0], start[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_resume_continues_the_uninterrupted_run_exactly(dtype, monkeypatch):
    """The checkpoint keeps the float32 master weights and the loss scaler's counters."""
    from sslam_plugin.training.fairseq_adapter.mixed_precision_state import LOSS_SCALER_KEY, MASTER_WEIGHTS_KEY

    straight = _mixed_precision_run(dtype, False, monkeypatch, steps=6)
    resumed = _mixed_precision_run(dtype, False, monkeypatch, steps=6, resume_at=3)
    _assert_same_run(straight, resumed)
    # fairseq's own checkpoint rebuilds the master weights by rounding the half model: not the same run
    fairseqs = _mixed_precision_run(dtype, True, monkeypatch, steps=6, resume_at=3)
    assert not all(torch.equal(a, b) for a, b in zip(straight[1], fairseqs[1]))
    _, opt_state = _saved_optimizer_state(dtype, monkeypatch)
    assert len(opt_state[MASTER_WEIGHTS_KEY]) == 8
    assert (LOSS_SCALER_KEY in opt_state) == (dtype == torch.float16)  # bf16 trains without a loss scale


def _saved_optimizer_state(dtype, monkeypatch):
    captured = {}
    real_save = torch.save

    def save(obj, f, *a, **k):
        captured.update(obj)
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    _mixed_precision_run(dtype, False, monkeypatch, steps=2, resume_at=1)
    monkeypatch.setattr(torch, "save", real_save)
    return captured["model"], captured["optimizer"]


def test_master_weights_of_another_model_are_not_loaded(monkeypatch, caplog):
    from sslam_plugin.training.fairseq_adapter import originals
    from sslam_plugin.training.fairseq_adapter.mixed_precision_state import (
        MASTER_WEIGHTS_KEY, load_state_dict, master_weights,
    )

    _, state = _saved_optimizer_state(torch.bfloat16, monkeypatch)
    opt = SimpleNamespace(fp32_params=[torch.zeros(2, 2)], scaler=None)
    monkeypatch.setitem(originals._REPLACED, "_FP16OptimizerMixin.load_state_dict", lambda *a: None)
    with caplog.at_level("WARNING"):
        load_state_dict(opt, {MASTER_WEIGHTS_KEY: state[MASTER_WEIGHTS_KEY]})
    assert "do not match this model's" in caplog.text
    assert torch.equal(master_weights(opt)[0], torch.zeros(2, 2))


def test_grad_norm_of_gradients_in_two_precisions():
    from sslam_plugin.training.fairseq_adapter import install, mixed_precision_speed as ours

    install(speedups=True)
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, dtype=torch.float16))]
    for p in params:
        p.grad = torch.full_like(p, 2.0)
    norm = ours.clip_grad_norm_(params, 1.0)
    assert float(norm) == pytest.approx((5 * 4.0) ** 0.5)
    assert all(torch.allclose(p.grad.float(), torch.full((p.numel(),), 2.0) / (5 * 4.0) ** 0.5, atol=1e-3)
               for p in params)


# ------------------------------------------------- epoch position across process counts
def _epoch_iterator(shards, shard_id=0):
    from fairseq.data import iterators

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 24

        def __getitem__(self, index):
            return index

    batches = [[2 * i, 2 * i + 1] for i in range(12)]  # 12 batches of 2 items
    return iterators.EpochBatchIterator(
        dataset=Items(), collate_fn=lambda items: items, batch_sampler=batches, seed=1,
        num_shards=shards, shard_id=shard_id, num_workers=0, epoch=1,
    )


def _take(iterator, count):
    itr = iterator.next_epoch_itr(shuffle=False)
    return [next(itr) for _ in range(count)]


@pytest.mark.parametrize("saved_shards, taken, shards, expect_next_batch", [
    (2, 3, 1, 6),  # 2 processes took 3 batches each: the 1-process job goes on at batch 6 of the epoch
    (1, 6, 2, 6),  # and back: 6 batches on 1 process are 3 per process on 2
    (1, 5, 2, 4),  # 5 do not split over 2: batch 4 is taken again, nothing is skipped
    (2, 3, 2, 6),  # the same count: fairseq's own position
])
def test_a_resume_on_another_process_count_continues_where_the_job_was(saved_shards, taken, shards, expect_next_batch):
    from sslam_plugin.training.fairseq_adapter import install
    from sslam_plugin.training.fairseq_adapter.iterator_position import NUM_SHARDS_KEY

    install()
    first = _epoch_iterator(saved_shards)
    _take(first, taken)
    state = first.state_dict()
    assert state[NUM_SHARDS_KEY] == saved_shards and state["iterations_in_epoch"] == taken
    resumed = _epoch_iterator(shards)
    resumed.load_state_dict(state)
    itr = resumed.next_epoch_itr(shuffle=False)
    # shard 0 takes batches 0, S, 2S, ... of the epoch
    assert next(itr) == [2 * expect_next_batch, 2 * expect_next_batch + 1]


def test_an_iterator_state_without_a_process_count_loads_as_fairseqs():
    from sslam_plugin.training.fairseq_adapter import install

    install()
    resumed = _epoch_iterator(2)
    resumed.load_state_dict({"version": 2, "epoch": 1, "iterations_in_epoch": 2, "shuffle": False})
    assert next(resumed.next_epoch_itr(shuffle=False)) == [8, 9]  # batch 4: shard 0's third
