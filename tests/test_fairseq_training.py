"""End to end through fairseq-hydra-train: demo config, checkpoint layout, resuming."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import hydra_train, logged

pytest.importorskip("fairseq")

OVERRIDES = [
    "dataset.batch_size=4",
    "dataset.num_workers=0",
    "task.target_length=128",
    "common.log_interval=1",
    "checkpoint.save_interval_updates=0",
]


# These tests stop a run by a smaller optimization.max_update and continue it with a larger one. The
# cosine schedule's length follows max_update, so the relaunch check refuses that as another experiment;
# every update here is inside the warm-up, where the lr does not depend on it: the same run, accepted.
LONGER = ("task.accept_config_changes=true",)


def train(cwd: Path, run_dir: Path, max_update: int, *extra: str, config: str = "demo_stage1") -> str:
    overrides = [
        "task.data=data/manifests",  # relative to cwd: hydra's chdir must not break it
        f"hydra.run.dir={run_dir}",
        f"optimization.max_update={max_update}",
        *OVERRIDES,
        *extra,
    ]
    result = hydra_train("pretrain", config, overrides, cwd)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def straight_run(demo_data) -> tuple[Path, str]:
    run_dir = demo_data / "straight"
    return run_dir, train(demo_data, run_dir, 9)


def test_demo_config_trains_and_writes_official_layout(straight_run):
    run_dir, log = straight_run
    ckpt = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert ckpt["optimizer_history"][-1]["num_updates"] == 9
    model = ckpt["model"]
    assert "modality_encoders.IMAGE.local_encoder.proj.weight" in model
    assert "modality_encoders.IMAGE.decoder.proj.weight" in model
    assert "blocks.3.mlp.fc2.weight" in model
    assert "modality_encoders.IMAGE.extra_tokens" in model["_ema"]
    assert not any(k.startswith("modality_encoders.IMAGE.decoder") for k in model["_ema"])
    # both loss terms and the collapse signals are logged every update
    for key in ("loss_patch", "loss_utterance", "pred_var", "target_var", "ema_decay"):
        assert len(logged(log, key)) == 9, key
    # the teacher moved away from the student's initial copy
    assert not torch.equal(model["_ema"]["blocks.0.attn.qkv.weight"], model["blocks.0.attn.qkv.weight"])


def test_weight_decay_applies_to_every_parameter_as_in_the_official_runs(straight_run):
    run_dir, _ = straight_run
    ckpt = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    groups = {name: state["param_groups"][0] for name, state in ckpt["last_optimizer_state"].items()}
    assert list(groups) == ["default"] and groups["default"]["weight_decay"] == 0.05
    # demo model: 4 blocks x 12 tensors + patch conv and bias + input norm (2) + CLS + decoder (2 convs,
    # 2 biases) + decoder proj (weight, bias)
    assert len(groups["default"]["params"]) == 4 * 12 + 2 + 2 + 1 + 4 + 2


def test_weight_decay_exemption_switch_for_pretraining():
    from conftest import tiny_config
    from sslam_plugin.training.model import NO_WEIGHT_DECAY_GROUP, SSLAMPretrainingModel

    exempt = SSLAMPretrainingModel(tiny_config(), exempt_norms_biases_from_decay=True)
    grouped = {n for n, p in exempt.pretrainer.named_parameters() if getattr(p, "param_group", None) == NO_WEIGHT_DECAY_GROUP}
    assert grouped == {n for n, p in exempt.pretrainer.named_parameters() if p.requires_grad} & exempt.pretrainer.no_weight_decay()
    assert "student.cls_token" in grouped or any(n.endswith("cls_token") for n in grouped)
    paper = SSLAMPretrainingModel(tiny_config())
    assert not any(hasattr(p, "param_group") for p in paper.pretrainer.parameters())


def test_resume_continues_updates_schedule_and_weights(demo_data, straight_run):
    straight_dir, straight_log = straight_run
    run_dir = demo_data / "resumed"
    first = train(demo_data, run_dir, 5)
    second = train(demo_data, run_dir, 9, *LONGER)
    assert "Loaded checkpoint" in second and "@ 5 updates" in second
    resumed_updates = sorted(logged(second, "loss"))
    assert resumed_updates == [6, 7, 8, 9]
    lr_straight, lr_resumed = logged(straight_log, "lr_default"), logged(second, "lr_default")
    for update in resumed_updates:
        assert lr_resumed[update] == pytest.approx(lr_straight[update], rel=1e-6)
    assert logged(first, "loss") == {u: v for u, v in logged(straight_log, "loss").items() if u <= 5}
    a = torch.load(straight_dir / "checkpoints" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    b = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    for key, value in a["model"].items():
        if key == "_ema":
            for k, v in value.items():
                assert torch.allclose(v, b["model"]["_ema"][k], atol=1e-6), k
        else:
            assert torch.allclose(value, b["model"][key], atol=1e-6), key


def test_a_finished_run_is_not_trained_further(demo_data, straight_run):
    """The same command again (or a scheduler's requeue) finds the run done and leaves it untouched."""
    run_dir, _ = straight_run
    last = run_dir / "checkpoints" / "checkpoint_last.pt"
    before = last.read_bytes()
    log = train(demo_data, run_dir, 9)
    assert "already holds update 9 and optimization.max_update=9: nothing to train" in log
    assert not logged(log, "loss")  # fairseq alone would train update 10 before checking
    assert last.read_bytes() == before


def test_bf16_run_resumes_exactly_as_if_never_stopped(demo_data):
    """Mixed precision: the checkpoint keeps the float32 master weights, so a resume changes nothing."""
    bf16 = ("common.bf16=true", "common.cpu=true")
    straight_dir, resumed_dir = demo_data / "bf16_straight", demo_data / "bf16_resumed"
    straight = train(demo_data, straight_dir, 6, *bf16)
    train(demo_data, resumed_dir, 3, *bf16)
    resumed = train(demo_data, resumed_dir, 6, *bf16, *LONGER)
    assert sorted(logged(resumed, "loss")) == [4, 5, 6]
    for key in ("loss", "loss_patch", "loss_utterance", "gnorm"):
        expected = {u: v for u, v in logged(straight, key).items() if u > 3}
        assert logged(resumed, key) == expected, key
    a = torch.load(straight_dir / "checkpoints" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    b = torch.load(resumed_dir / "checkpoints" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    weight = a["model"]["blocks.0.attn.qkv.weight"]
    assert torch.equal(weight, weight.bfloat16().to(weight.dtype))  # the model trained in bf16
    for key, value in a["model"].items():
        if key == "_ema":  # the float32 teacher too
            assert all(torch.equal(v, b["model"]["_ema"][k]) for k, v in value.items())
        else:
            assert torch.equal(value, b["model"][key]), key
    master_a = a["last_optimizer_state"]["fp32_master_weights"]
    master_b = b["last_optimizer_state"]["fp32_master_weights"]
    assert master_a[0].dtype == torch.float32 and len(master_a) == len(master_b)
    # the master weights hold what bf16 rounds away: without them a resume would lose it
    assert any(not torch.equal(m, m.bfloat16().float()) for m in master_a)
    assert all(torch.equal(x, y) for x, y in zip(master_a, master_b))


STAGE2_TERMS = ("loss_utterance", "loss_patch", "loss_utterance_mixed", "loss_patch_mixed", "loss_source_retention")


def test_stage2_continues_from_our_stage1(demo_data, straight_run):
    straight_dir, _ = straight_run
    stage1 = straight_dir / "checkpoints" / "checkpoint_last.pt"
    relative = stage1.relative_to(demo_data)  # resolved against the launch folder, not hydra's run dir
    run_dir = demo_data / "stage2_ours"
    log = train(
        demo_data, run_dir, 3, f"checkpoint.continue_once={relative}", "checkpoint.save_interval_updates=1",
        config="demo_stage2",
    )
    assert "starting from the weights of" in log and f"Loaded checkpoint {stage1}" in log
    assert sorted(logged(log, "loss")) == [1, 2, 3]  # a fresh schedule, not update 10
    # Stage 2 starts from stage 1's final encoder. fairseq's warm-up starts at lr 0 (the lr logged at update
    # k is the one update k + 1 uses), so update 1 leaves the weights as loaded: its checkpoint holds the
    # starting encoder exactly; update 2 then moves it.
    start = torch.load(stage1, map_location="cpu", weights_only=False)["model"]
    saved = {u: torch.load(run_dir / "checkpoints" / f"checkpoint_1_{u}.pt", map_location="cpu", weights_only=False)
             for u in (1, 2)}
    assert [saved[u]["optimizer_history"][-1]["num_updates"] for u in (1, 2)] == [1, 2]
    encoder = [k for k in start if k.startswith(("blocks.", "modality_encoders.IMAGE.")) and ".decoder." not in k]
    assert len(encoder) > 20 and all(k in saved[1]["model"] for k in encoder)
    for name in encoder:
        assert torch.equal(saved[1]["model"][name], start[name]), f"{name}: stage 2 did not start from stage 1's"
    assert not torch.equal(saved[2]["model"]["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])
    for key in STAGE2_TERMS + ("mixed_fraction",):
        assert len(logged(log, key)) == 3, key
    assert all(0 < v < 1 for v in logged(log, "mixed_fraction").values())


def test_stage2_from_official_checkpoint_then_resume(demo_data, golden_dir):
    official = golden_dir / "official_eat_tiny_checkpoint.pt"
    shape = [
        "model.encoder.embed_dim=192", "model.encoder.depth=2", "model.encoder.num_heads=3",
        "model.decoder.dim=192", "model.decoder.layers=2", "model.average_top_k_layers=2",
        "task.target_length=1024", "dataset.batch_size=2",
        "model.mixing.unmixed_window_frames=240", f"checkpoint.continue_once={official}",
    ]
    run_dir = demo_data / "stage2_official"
    first = train(demo_data, run_dir, 2, *shape, config="demo_stage2")
    assert "starting from the weights of" in first
    ckpt = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert int(ckpt["model"]["_teacher_updates"]) == 1  # the teacher followed update 1; update 2 is next
    second = train(demo_data, run_dir, 4, *shape, *LONGER, config="demo_stage2")
    assert f"resuming from {run_dir / 'checkpoints' / 'checkpoint_last.pt'} (update 2" in second
    assert sorted(logged(second, "loss")) == [3, 4]
    lr_first, lr_second = logged(first, "lr_default"), logged(second, "lr_default")
    assert lr_second[3] > lr_first[2]  # still warming up from where it stopped
