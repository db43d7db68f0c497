"""What makes data-parallel runs and resumes exact, checked in-process on the demo corpus:
per-batch random draws, the teacher's update count, summable logs, and closed data loaders."""

from __future__ import annotations

import threading
from collections import OrderedDict

import pytest
import torch

pytest.importorskip("fairseq")

from fairseq import metrics  # noqa: E402

from sslam_plugin.randomness import batch_seed, derived_seed, seeded_generator  # noqa: E402
from sslam_plugin.training.criterion import SSLAMWeightedLossesCriterion  # noqa: E402
from sslam_plugin.training.data_loading import close_all_batch_iterators  # noqa: E402
from sslam_plugin.training.model import SSLAMPretrainingModel  # noqa: E402
from sslam_plugin.training.task import SSLAMPretrainingTask, SSLAMPretrainingTaskConfig  # noqa: E402

from conftest import tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def task(demo_data):
    cfg = SSLAMPretrainingTaskConfig(
        data=str(demo_data / "data" / "manifests"), target_length=128, clone_batch=2, patch_size=16, seed=3, preflight_clips=0
    )
    task = SSLAMPretrainingTask(cfg)
    task.load_dataset("train")
    return task


def batches(task, epoch: int, shard: int = 0, shards: int = 1, workers: int = 0, buffer: int = 0):
    itr = task.get_batch_iterator(
        task.dataset("train"), max_sentences=4, num_shards=shards, shard_id=shard, epoch=epoch,
        num_workers=workers, data_buffer_size=buffer, seed=3,
    )
    return itr, itr.next_epoch_itr(shuffle=True)


# ------------------------------------------------------------- random draws
def test_derived_seeds_depend_on_every_key_in_order():
    assert derived_seed(1, 2, 3) == derived_seed(1, 2, 3)
    assert len({derived_seed(1, 2, 3), derived_seed(1, 3, 2), derived_seed(2, 2, 3), derived_seed(1, 2)}) == 4
    assert 0 <= derived_seed(2**40, 7) < 2**63
    assert batch_seed(1, 1, [4, 5]) != batch_seed(1, 1, [5, 4]) != batch_seed(1, 2, [4, 5])
    with pytest.raises(ValueError, match="non-negative"):
        derived_seed(-1)


def test_each_rank_draws_its_own_masks_and_mixing_and_draws_them_again_after_a_resume(task):
    mixing = dict(enabled=True, unmixed_window_frames=32, windows_per="clip", partner="derangement")
    model = SSLAMPretrainingModel(tiny_config(clone_batch=2), mixing=_mixing_config(**mixing)).pretrainer

    def first_batch(shard, epoch=1):
        _, it = batches(task, epoch, shard=shard, shards=2)
        batch = next(it)["net_input"]
        plan = model.plan(4, 128, seeded_generator(batch["batch_seed"], 1 + model.mixing.seed))
        return batch, plan

    (rank0, plan0), (rank1, plan1) = first_batch(0), first_batch(1)
    assert rank0["batch_seed"] != rank1["batch_seed"]
    assert not torch.equal(rank0["mask"], rank1["mask"])
    assert not torch.equal(plan0.windows, plan1.windows) or not torch.equal(plan0.partners, plan1.partners)
    # relaunching at epoch 1 gives each rank the same batch, hence the same draws
    again, plan_again = first_batch(1)
    assert again["batch_seed"] == rank1["batch_seed"] and torch.equal(again["mask"], rank1["mask"])
    assert torch.equal(plan_again.windows, plan1.windows) and torch.equal(plan_again.partners, plan1.partners)
    # the next epoch draws anew
    next_epoch, _ = first_batch(1, epoch=2)
    assert next_epoch["batch_seed"] != rank1["batch_seed"]


def _mixing_config(**values):
    from sslam_plugin.mixing import MixingConfig

    return MixingConfig(**values)


# --------------------------------------------------- the teacher's update count
def _fairseq_calls(model, updates, start: int = 0, micro_batches: int = 2):
    """What fairseq does: set_num_updates(N) per micro-batch of update N + 1, then an optimiser step."""
    for n in range(start, updates):
        for _ in range(micro_batches):
            model.set_num_updates(n)
        with torch.no_grad():
            for p in model.pretrainer.encoder.parameters():
                p.add_(0.01 * (n + 1))


def test_a_resumed_teacher_takes_every_step_of_an_uninterrupted_one():
    torch.manual_seed(0)
    straight = SSLAMPretrainingModel(tiny_config(ema_decay=0.9, ema_end_decay=0.99, ema_anneal_end_step=5))
    first = SSLAMPretrainingModel(tiny_config(ema_decay=0.9, ema_end_decay=0.99, ema_anneal_end_step=5))
    first.load_state_dict(straight.state_dict())
    _fairseq_calls(straight, 6)
    _fairseq_calls(first, 3)
    saved = OrderedDict((k, v.clone() if torch.is_tensor(v) else v) for k, v in first.state_dict().items())
    assert int(saved["_teacher_updates"]) == 2  # update 3 is stepped when update 4 starts

    resumed = SSLAMPretrainingModel(tiny_config(ema_decay=0.9, ema_end_decay=0.99, ema_anneal_end_step=5))
    resumed.set_num_updates(3)  # fairseq, before loading the weights
    resumed.load_state_dict(saved)
    _fairseq_calls(resumed, 6, start=3)
    for name, value in straight.pretrainer.teacher.state_dict().items():
        assert torch.equal(value, resumed.pretrainer.teacher.state_dict()[name]), name
    assert resumed.ema_decay() == straight.ema_decay()  # logged as a function of the update


def test_a_new_schedule_from_a_continued_checkpoint_steps_from_its_second_update():
    stage1 = SSLAMPretrainingModel(tiny_config())
    _fairseq_calls(stage1, 4)
    stage2 = SSLAMPretrainingModel(tiny_config())
    stage2.set_num_updates(4)
    stage2.load_state_dict(stage1.state_dict())
    teacher = {k: v.clone() for k, v in stage2.pretrainer.teacher.state_dict().items()}
    stage2.set_num_updates(0)  # update 1 of the new run: nothing to follow yet
    assert all(torch.equal(v, stage2.pretrainer.teacher.state_dict()[k]) for k, v in teacher.items())
    stage2.set_num_updates(1)  # update 2: the teacher follows update 1
    assert any(not torch.equal(v, stage2.pretrainer.teacher.state_dict()[k]) for k, v in teacher.items())


# ------------------------------------------------------------ summable logs
def test_logs_summed_over_ranks_reduce_like_the_list():
    logs = [
        {"sample_size": 10.0, "nsentences": 2, "ntokens": 10.0, "loss_patch": 5.0, "loss": 8.0, "pred_var": 0.5, "_batches": 1},
        {"sample_size": 30.0, "nsentences": 2, "ntokens": 30.0, "loss_patch": 9.0, "loss": 12.0, "pred_var": 0.3, "_batches": 1},
    ]
    summed = {k: logs[0][k] + logs[1][k] for k in logs[0]}
    with metrics.aggregate() as listed:
        SSLAMWeightedLossesCriterion.reduce_metrics(logs)
    with metrics.aggregate() as reduced:
        SSLAMWeightedLossesCriterion.reduce_metrics([summed])
    assert listed.get_smoothed_values() == reduced.get_smoothed_values()
    assert reduced.get_smoothed_values()["pred_var"] == pytest.approx(0.4)


def test_every_batch_logs_the_same_keys_in_the_same_order():
    class Model(torch.nn.Module):
        def __init__(self, order):
            super().__init__()
            self.order = order

        def forward(self, **unused):
            return {"losses": {k: torch.tensor(1.0) for k in self.order}, "sample_size": torch.tensor(2), "logs": {}}

    criterion = SSLAMWeightedLossesCriterion(_criterion_config(), task=None)
    sample = {"id": torch.arange(2), "net_input": {}}
    a = criterion(Model(["utterance", "patch", "source_retention"]), sample)[2]
    b = criterion(Model(["source_retention", "patch", "utterance"]), sample)[2]
    assert list(a) == list(b)


def _criterion_config():
    from sslam_plugin.training.criterion import SSLAMWeightedLossesConfig

    return SSLAMWeightedLossesConfig(log_keys=[])


# -------------------------------------------------------------- data loaders
def _prefetch_threads():
    return [t for t in threading.enumerate() if type(t).__name__ == "BackgroundConsumer" and t.is_alive()]


def test_an_epochs_workers_and_prefetch_thread_end_before_the_next_epoch(task):
    first, it = batches(task, 1, workers=2, buffer=4)
    while it.has_next():  # as fairseq: the epoch ends at the count, the loader is never exhausted
        next(it)
    workers = list(first.dataloader._iterator._workers)
    assert len(workers) == 2 and all(w.is_alive() for w in workers)

    second, it = batches(task, 2, workers=2, buffer=4)
    assert not any(w.is_alive() for w in workers)  # closed now, not whenever the GC finalises them
    next(it), next(it)  # mid-epoch: workers busy, prefetch thread filling its buffer
    busy = list(second.dataloader._iterator._workers)
    assert _prefetch_threads()
    close_all_batch_iterators()  # what the launcher does when training returns
    assert not _prefetch_threads() and not any(w.is_alive() for w in busy)
