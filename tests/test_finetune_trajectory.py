"""The official fine-tuning trajectory, replayed through this plugin's recipe.

``shared/reference/golden_finetune`` holds six deterministic updates of the public
EAT fine-tuning trainer: the start checkpoint (encoder and the trainer's fresh
head), the data, the overrides given to the official trainer, and per update
the loss, gradient norm and every parameter group's lr and weight decay, with
the final weights. Everything here is read from those files, so another
fixture of the same form can be dropped in.

The replay starts ``fairseq-hydra-train --config-dir config/finetune
--config-name as20k`` from the same checkpoint (``model.model_path``: a
fine-tuned checkpoint whose labels match keeps its head) with the official
overrides translated to this plugin's option names.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch

from conftest import REFERENCE, REPO, require_reference, run

pytest.importorskip("fairseq")

FIXTURE = REFERENCE / "golden_finetune"
LAUNCHED: Dict = {}  # the replay's command, for launching it again
RECIPE = ("finetune", "as20k")

# official override key -> this plugin's key; None: not a setting of the run itself
OFFICIAL_TO_OURS = {
    "hydra.run.dir": None,
    "common.user_dir": None,
    "checkpoint.save_dir": None,
    "checkpoint.restore_file": None,  # we start through model.model_path, which keeps the head
    "checkpoint.reset_optimizer": None,
    "checkpoint.reset_lr_scheduler": None,
    "checkpoint.reset_dataloader": None,
    "checkpoint.reset_meters": None,
    "task.data": None,
    "model.model_path": None,
    "model.num_classes": None,  # from label_descriptors.csv
    "common.cpu": "common.cpu",
    "common.fp16": "common.fp16",
    "common.log_interval": "common.log_interval",
    "common.tensorboard_logdir": "common.tensorboard_logdir",
    "common.seed": "common.seed",
    "checkpoint.no_save_optimizer_state": "checkpoint.no_save_optimizer_state",
    "dataset.batch_size": "dataset.batch_size",
    "dataset.num_workers": "dataset.num_workers",
    "dataset.disable_validation": "dataset.disable_validation",
    "distributed_training.distributed_world_size": "distributed_training.distributed_world_size",
    "task.target_length": "task.target_length",
    "task.roll_aug": "task.roll_aug",
    "task.noise": "task.noise_aug",
    "optimization.max_update": "optimization.max_update",
    "optimization.lr": "optimization.lr",
    "optimization.update_freq": "optimization.update_freq",
    "optimization.clip_norm": "optimization.clip_norm",
    "optimizer.groups.default.lr_float": "optimizer.groups.default.lr_float",
    "optimizer.groups.default.lr_scheduler.warmup_updates": "optimizer.groups.default.lr_scheduler.warmup_updates",
    "model.mixup": "model.mixup_alpha",
    "model.specaug": "model.specaug_ratio",  # false -> 0
    "+model.drop_path_rate": "model.drop_path_rate",
    "+model.layer_decay": "model.layer_decay",
    "model.label_smoothing": "criterion.label_smoothing",
}


def official_value(text: str) -> str:
    """``"16 (yaml: 96; ...)"`` -> ``"16"``: the value the official trainer was given."""
    return text.split(" (", 1)[0].strip()


def translated_overrides(expected: Dict) -> List[str]:
    overrides = []
    for key, text in expected["trainer"]["trajectory_overrides"].items():
        if key not in OFFICIAL_TO_OURS:
            raise AssertionError(f"no translation for the official override {key!r}: add it to OFFICIAL_TO_OURS")
        ours = OFFICIAL_TO_OURS[key]
        if ours is None:
            continue
        value = official_value(text)
        if key == "model.specaug":
            assert value == "false", "a replay with SpecAugment on is not deterministic"
            value = "0.0"
        overrides.append(f"++{ours}={value}")  # ++: set whether or not the recipe lists it
    return overrides


def prepare_data(tmp: Path) -> Path:
    data = tmp / "data"
    shutil.copytree(FIXTURE / "data", data)
    manifest = data / "train.tsv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([str(data), *lines[1:]]) + "\n")  # the root line is a placeholder
    return data


@pytest.fixture(scope="module")
def replay(tmp_path_factory) -> Tuple[Dict, Dict, Path, str]:
    require_reference(FIXTURE)
    expected = json.loads((FIXTURE / "expected.json").read_text())
    tmp = tmp_path_factory.mktemp("finetune_replay")
    data = prepare_data(tmp)
    run_dir = tmp / "run"
    out = tmp / "trajectory.json"
    command = [
        sys.executable, str(REPO / "tests" / "finetune_trajectory.py"), str(out),
        "--config-dir", str(REPO / "config" / RECIPE[0]), "--config-name", RECIPE[1],
        f"task.data={data}", f"model.model_path={FIXTURE / 'init.pt'}", f"hydra.run.dir={run_dir}",
        *translated_overrides(expected),
    ]
    result = run(command, cwd=tmp)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    log = result.stdout + result.stderr
    LAUNCHED["command"], LAUNCHED["cwd"] = command, tmp
    return expected, json.loads(out.read_text()), run_dir, log


def test_replay_starts_from_the_checkpoints_head(replay):
    """The head the first update starts from is the start checkpoint's, bit for bit (not a fresh one)."""
    expected, got, _, log = replay
    assert "continuing with its classification head" in log
    start = torch.load(FIXTURE / "init.pt", map_location="cpu", weights_only=False)["model"]
    head = {name: value for name, value in start.items() if name.startswith(("head.", "fc_norm."))}
    assert head["head.weight"].shape[0] == expected["data"]["num_classes"]
    assert set(got["start_head"]) == set(head)
    for name, value in head.items():
        assert torch.equal(torch.tensor(got["start_head"][name], dtype=value.dtype), value), name


def test_losses_and_gradient_norms_equal_the_official_run(replay):
    expected, got, _, _ = replay
    official = expected["per_update"]
    assert len(got["updates"]) == len(official)
    for ours, theirs in zip(got["updates"], official):
        assert ours["sample_size"] == theirs["sample_size"]  # positive labels, not clips
        loss = ours["loss_sum"] / ours["sample_size"]
        assert loss == pytest.approx(theirs["loss"], rel=1e-5), theirs["update"]
        assert ours["gnorm"] == pytest.approx(theirs["gnorm"], rel=1e-5), theirs["update"]


def test_every_parameter_gets_the_official_lr_and_weight_decay(replay):
    expected, got, _, _ = replay
    # group None: not trained (the fixed positions)
    group_of = {name: info["group"] for name, info in expected["per_parameter"].items() if info["group"] is not None}
    for ours, theirs in zip(got["updates"], expected["per_update"]):
        assert set(ours["lr"]) == set(group_of), "trained parameters differ from the official run's"
        for name, group in group_of.items():
            assert ours["lr"][name] == pytest.approx(theirs["lr"][group], rel=1e-12, abs=0), (theirs["update"], name)
            assert ours["weight_decay"][name] == theirs["weight_decay"][group], (theirs["update"], name)


def test_final_weights_equal_the_official_run(replay):
    _, _, run_dir, _ = replay
    ours = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
    official = torch.load(FIXTURE / "final.pt", map_location="cpu", weights_only=False)["model"]
    assert set(ours) == set(official)
    for name, value in official.items():
        diff = (ours[name].float() - value.float()).abs().max().item()
        assert diff <= 1e-5, f"{name}: max abs difference {diff:.2e}"


@pytest.mark.parametrize("checkpoint", ["init", "final"])
def test_official_finetuned_checkpoints_give_their_logits_at_inference(checkpoint):
    """The fixture's own check: logits of two clips from init.pt and final.pt, through load_encoder."""
    import soundfile as sf

    from sslam_plugin.inference import load_encoder

    require_reference(FIXTURE)
    check = json.loads((FIXTURE / "expected.json").read_text())["self_check"][checkpoint]
    model = load_encoder(FIXTURE / f"{checkpoint}.pt")
    assert [label.id for label in model.labels] == [
        label["mid"] for label in json.loads((FIXTURE / "expected.json").read_text())["data"]["labels_in_logit_order"]
    ]
    for clip, values in check["clips"].items():
        waveform, rate = sf.read(FIXTURE / "data" / "wav" / f"{clip}.wav", dtype="float32")
        with torch.no_grad():
            logits = model.logits(torch.from_numpy(waveform), rate)[0]
        assert torch.allclose(logits, torch.tensor(values["logits"]), atol=1e-4), (clip, logits)


def test_the_replayed_checkpoint_records_its_real_encoder_and_loads_for_inference(replay):
    """The recipe says ViT-B (768 wide, 12 heads); the run fine-tuned the fixture's tiny encoder. The
    checkpoint's config must say so, or readers build the wrong model (192 wide with 12 heads)."""
    from sslam_plugin.inference import load_encoder

    expected, _, run_dir, _ = replay
    path = run_dir / "checkpoints" / "checkpoint_last.pt"
    saved = torch.load(path, map_location="cpu", weights_only=False)["cfg"]["model"]["encoder"]
    arch = expected["model"]["encoder"]
    assert (saved["embed_dim"], saved["depth"], saved["num_heads"]) == (arch["embed_dim"], arch["depth"], arch["num_heads"])
    ours, official = load_encoder(path), load_encoder(FIXTURE / "final.pt")
    fbank = torch.randn(2, 1, 1024, 128)
    with torch.no_grad():
        assert torch.allclose(ours.logits(fbank), official.logits(fbank), atol=1e-4)


def test_the_same_command_again_is_the_same_finished_run(replay):
    """A relaunch compares its settings with the checkpoint's: the recorded encoder (model_path's, not the
    recipe's ViT-B) is no change, and a finished run is left as it is."""
    _, _, run_dir, _ = replay
    before = (run_dir / "checkpoints" / "checkpoint_last.pt").read_bytes()
    result = run(LAUNCHED["command"], cwd=LAUNCHED["cwd"])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "nothing to train" in result.stdout + result.stderr
    assert (run_dir / "checkpoints" / "checkpoint_last.pt").read_bytes() == before


def test_a_relaunch_lists_only_what_really_changed(replay):
    """A longer schedule is another experiment and is refused, naming that one key: the encoder the run
    recorded (model_path's, not the recipe's ViT-B) and the plugin's defaults are no change."""
    from sslam_plugin.training.launch import LAUNCH_REFUSED_EXIT_STATUS

    _, _, run_dir, _ = replay
    before = (run_dir / "checkpoints" / "checkpoint_last.pt").read_bytes()
    result = run([*LAUNCHED["command"], "++optimization.max_update=7"], cwd=LAUNCHED["cwd"])
    log = result.stdout + result.stderr
    assert result.returncode == LAUNCH_REFUSED_EXIT_STATUS, log[-4000:]
    refusal = next(line for line in log.splitlines() if "was trained with other settings" in line)
    listed = refusal.split("would make another experiment: ", 1)[1].split(". Relaunch with", 1)[0]
    assert listed == "optimization.max_update: checkpoint: 6, now: 7", refusal
    assert (run_dir / "checkpoints" / "checkpoint_last.pt").read_bytes() == before
