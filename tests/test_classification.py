"""Fine-tuning and linear evaluation: loading pre-trained weights, freezing, layouts, a short run."""

from __future__ import annotations

import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import GOLDEN, hydra_train, require_reference

pytest.importorskip("fairseq")

from sslam_plugin.training.classifier_model import (  # noqa: E402
    ClassifierModelConfig,
    SSLAMClassifierModel,
    encoder_from_checkpoint,
)


@pytest.fixture(scope="module")
def official_path():
    return require_reference(GOLDEN) / "official_eat_tiny_checkpoint.pt"


def build(official_path, **cfg):
    return SSLAMClassifierModel.build_model(
        ClassifierModelConfig(model_path=str(official_path), **cfg), SimpleNamespace(num_classes=5)
    )


def test_official_checkpoint_gives_golden_cls(official_path):
    model = build(official_path).eval()
    fbank = torch.from_numpy(np.load(GOLDEN / "clip_16k_6s.fbank.npy"))[None, None]
    with torch.no_grad():
        cls = model.classifier.embed(fbank)[0].numpy()
    golden = np.load(GOLDEN / "clip_16k_6s.features.npy")[0]
    assert np.abs(cls - golden).max() < 1e-4


def test_teacher_weights_are_selectable(official_path):
    ckpt = torch.load(official_path, map_location="cpu", weights_only=False)
    _, teacher = encoder_from_checkpoint(str(official_path), use_teacher=True)
    assert torch.equal(teacher["blocks.1.mlp.fc1.weight"], ckpt["model"]["_ema"]["blocks.1.mlp.fc1.weight"])
    model = build(official_path, use_teacher=True)
    assert torch.equal(model.classifier.encoder.blocks[1].mlp.fc1.weight, ckpt["model"]["_ema"]["blocks.1.mlp.fc1.weight"])


def test_linear_eval_keeps_the_encoder_frozen(official_path):
    torch.manual_seed(0)
    model = build(official_path, linear_eval=True, mixup_alpha=0.8, specaug_ratio=0.2).train()
    # as the official linear evaluation: frozen, but in training mode (stochastic depth active)
    assert model.classifier.encoder.training
    assert model.classifier.encoder.blocks[-1].drop_path.prob == pytest.approx(0.1)
    before = {k: v.clone() for k, v in model.classifier.encoder.state_dict().items()}
    head_before = model.classifier.head.weight.clone()
    params = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in params} == {id(p) for p in model.classifier.head.parameters()} | {
        id(p) for p in model.classifier.fc_norm.parameters()
    }
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(3):
        source, target = torch.randn(4, 1, 128, 128), (torch.rand(4, 5) < 0.3).float()
        out = model(source, target=target)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], out["target"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for key, value in model.classifier.encoder.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(model.classifier.head.weight, head_before)
    # no autograd graph through the frozen encoder
    assert not model.classifier.embed(torch.randn(2, 1, 128, 128)).requires_grad


def test_linear_eval_encoder_eval_mode_switch(official_path):
    model = build(official_path, linear_eval=True, frozen_encoder_eval_mode=True).train()
    assert not model.classifier.encoder.training and model.classifier.head.training
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():  # eval mode: no stochastic depth, so two passes agree
        assert torch.equal(model(x)["logits"], model(x)["logits"])


def test_state_dict_uses_official_finetuned_layout(official_path):
    model = build(official_path)
    state = model.state_dict()
    assert "model.modality_encoders.IMAGE.local_encoder.proj.weight" in state
    assert {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"} <= set(state)
    assert not any(k.startswith("encoder.") for k in state)
    other = build(official_path, use_teacher=True)
    other.load_state_dict(state)
    for key, value in other.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_layer_decay_scales_blocks_only(official_path):
    model = build(official_path, layer_decay=0.5)  # depth 2
    scales = {n: p.optim_overrides["optimizer"]["lr_scale"] for n, p in model.classifier.named_parameters()
              if hasattr(p, "optim_overrides")}
    assert scales == {**{f"encoder.blocks.0.{k}": 0.25 for k, _ in model.classifier.encoder.blocks[0].named_parameters()},
                      **{f"encoder.blocks.1.{k}": 0.5 for k, _ in model.classifier.encoder.blocks[1].named_parameters()}}
    # paper rule: nothing is exempt from weight decay (no parameter leaves the default group)
    assert not any(hasattr(p, "param_group") for p in model.classifier.parameters())


def test_weight_decay_exemption_and_front_end_decay_switches(official_path):
    model = build(official_path, layer_decay=0.5, exempt_norms_biases_from_decay=True, layer_decay_front_end=True)
    classifier = model.classifier
    no_decay = classifier.no_weight_decay()
    assert {"encoder.cls_token", "encoder.input_norm.weight", "head.bias", "fc_norm.weight"} <= no_decay
    assert not no_decay & {"head.weight", "encoder.blocks.0.attn.qkv.weight", "encoder.patch_embed.proj.weight"}
    assert {n for n, p in classifier.named_parameters() if getattr(p, "param_group", None) == "no_weight_decay"} == no_decay
    assert classifier.encoder.cls_token.optim_overrides["optimizer"]["lr_scale"] == 0.125  # layer 0 of depth 2
    assert not hasattr(classifier.head.weight, "optim_overrides")  # scale 1


def _finetuned_checkpoint(tmp_path, official_path, label_ids):
    """A fine-tuned checkpoint of this plugin (official layout, labels in task_state)."""
    model = build(official_path)
    torch.nn.init.normal_(model.classifier.head.weight)
    path = tmp_path / "finetuned.pt"
    torch.save({"model": model.state_dict(), "cfg": {"model": {"_name": "sslam_classifier", "pooling": "cls"},
                                                     "task": {"_name": "sslam_classification", "multilabel": True}},
                "task_state": {"label_ids": label_ids, "label_names": label_ids}}, path)
    return model, path


def test_finetuned_model_path_keeps_a_matching_head(tmp_path, official_path, caplog):
    ids = [f"/m/{i}" for i in range(5)]
    trained, path = _finetuned_checkpoint(tmp_path, official_path, ids)
    task = SimpleNamespace(num_classes=5, labels=SimpleNamespace(ids=ids))
    with caplog.at_level("INFO"):
        model = SSLAMClassifierModel.build_model(ClassifierModelConfig(model_path=str(path)), task)
    assert "continuing with its classification head (5 classes)" in caplog.text
    assert torch.equal(model.classifier.head.weight, trained.classifier.head.weight)
    assert torch.equal(model.classifier.encoder.blocks[1].mlp.fc1.weight, trained.classifier.encoder.blocks[1].mlp.fc1.weight)


@pytest.mark.parametrize("labels, reason", [
    ([f"/m/{i}" for i in (1, 0, 2, 3, 4)], "its labels are not this task's label_descriptors.csv"),
    ([f"/m/{i}" for i in range(4)], "it has 4 outputs, this task 5 classes"),
])
def test_finetuned_model_path_with_other_labels_starts_a_fresh_head(tmp_path, official_path, caplog, labels, reason):
    trained, path = _finetuned_checkpoint(tmp_path, official_path, labels)
    if len(labels) != 5:  # a head of another size: rebuild the checkpoint with that many outputs
        state = trained.state_dict()
        state["head.weight"], state["head.bias"] = state["head.weight"][:4], state["head.bias"][:4]
        torch.save({**torch.load(path, weights_only=False), "model": state}, path)
    task = SimpleNamespace(num_classes=5, labels=SimpleNamespace(ids=[f"/m/{i}" for i in range(5)]))
    with caplog.at_level("WARNING"):
        model = SSLAMClassifierModel.build_model(ClassifierModelConfig(model_path=str(path)), task)
    assert "has a classification head, not used: " + reason in caplog.text
    assert not torch.equal(model.classifier.head.weight[:4], trained.classifier.head.weight[:4])
    assert torch.equal(model.classifier.encoder.blocks[1].mlp.fc1.weight, trained.classifier.encoder.blocks[1].mlp.fc1.weight)


def test_demo_finetuning_improves_validation_map(demo_data):
    run_dir = demo_data / "finetune"
    result = hydra_train("finetune", "demo", [
        f"task.data={demo_data / 'data' / 'manifests'}",
        "model.model_path=null",  # random init from model.encoder, seeded by common.seed
        f"hydra.run.dir={run_dir}",
        "dataset.batch_size=8", "dataset.num_workers=0",
        "optimization.max_update=48", "optimizer.groups.default.lr_scheduler.warmup_updates=6",
    ], cwd=demo_data)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    maps = [float(m) for m in re.findall(r"valid on 'valid' subset \| .*?mAP ([\d.]+)", log)]
    assert len(maps) >= 3, log[-2000:]
    assert maps[-1] > maps[0]
    ckpt = torch.load(run_dir / "checkpoints" / "checkpoint_best.pt", map_location="cpu", weights_only=False)
    assert ckpt["task_state"]["label_ids"][0] == "low_hum"
    assert ckpt["cfg"]["model"]["encoder"]["embed_dim"] == 128  # self-contained: architecture saved

    # resuming with the classes in another order would silently train the wrong head rows
    swapped = demo_data / "data" / "swapped_labels"  # beside manifests/: the same relative audio root
    shutil.copytree(demo_data / "data" / "manifests", swapped)
    rows = (swapped / "label_descriptors.csv").read_text().splitlines()
    first, second = rows[0].split(",", 1), rows[1].split(",", 1)
    rows[0], rows[1] = f"{first[0]},{second[1]}", f"{second[0]},{first[1]}"
    (swapped / "label_descriptors.csv").write_text("\n".join(rows) + "\n")
    resumed = hydra_train("finetune", "demo", [
        f"task.data={swapped}", "model.model_path=null", f"hydra.run.dir={run_dir}",
        "dataset.batch_size=8", "dataset.num_workers=0", "optimization.max_update=50",
        "task.accept_config_changes=true",  # past the changed task.data: the label order is checked next
    ], cwd=demo_data)
    assert resumed.returncode != 0
    assert "the run's checkpoint was trained with other class indices than" in resumed.stdout + resumed.stderr
    assert "the same 10 labels in another order (first difference at index 0: 'low_hum'" in resumed.stdout + resumed.stderr


def test_roll_fbank_shifts_training_clips_in_time_reproducibly(demo_data):
    """task.roll_aug with task.roll_fbank: each training clip's frames circularly shifted, from (seed, epoch, index)."""
    from sslam_plugin.data import read_manifest
    from sslam_plugin.features import FbankConfig
    from sslam_plugin.data.labelled import LabelledClips

    manifest = read_manifest(demo_data / "data" / "manifests" / "train.tsv")
    labels = [[0]] * len(manifest)
    fbank = FbankConfig(target_length=128)
    plain = LabelledClips(manifest, labels, 10, fbank, training=True, roll=False, seed=5)
    rolled = LabelledClips(manifest, labels, 10, fbank, training=True, roll=True, seed=5, roll_fbank=True)

    def shift_of(index: int) -> int:
        x, y = plain[index]["source"][0], rolled[index]["source"][0]  # (T, M)
        shifts = [s for s in range(x.shape[0]) if torch.equal(torch.roll(x, s, dims=0), y)]
        assert shifts, f"clip {index} is not a circular time shift of itself"
        return shifts[0]

    first = [shift_of(i) for i in range(6)]
    assert sum(s != 0 for s in first) >= 5  # a real shift, not the identity
    assert [shift_of(i) for i in range(6)] == first  # the same draw for the same (seed, epoch, index)
    rolled.set_epoch(2)
    assert [shift_of(i) for i in range(6)] != first


@pytest.mark.parametrize("target_length", [128, 1024])
def test_roll_aug_rolls_and_scales_the_waveform_before_the_fbank(demo_data, target_length):
    """task.roll_aug (official): the 16 kHz zero-mean waveform rolled by k and scaled by Beta(10, 10) + 0.5, then the fbank.

    1024 frames cover the demo clips, which are then read whole: bit for bit the official computation.
    128 frames make them long clips, read only where the rolled crop looks (sslam_plugin.data.rolled_crop):
    the same samples, the mean taken over them, so equal to round-off.
    """
    from sslam_plugin.data import read_manifest
    from sslam_plugin.data.audio import load_audio
    from sslam_plugin.data.labelled import LabelledClips
    from sslam_plugin.features import FbankConfig, kaldi_fbank, normalize_fbank, pad_or_crop, resample_to

    manifest = read_manifest(demo_data / "data" / "manifests" / "train.tsv")
    fbank = FbankConfig(target_length=target_length)
    rolled = LabelledClips(manifest, [[0]] * len(manifest), 10, fbank, training=True, roll=True, seed=5)
    rolled.set_epoch(2)
    for index in range(3):
        wav, rate = load_audio(manifest.full_path(index))
        wav = resample_to(wav, rate).float()
        wav = wav - wav.mean()
        rng = np.random.default_rng([5, 2, index])  # (seed, epoch, index)
        k, g = int(rng.integers(len(wav))), float(rng.beta(10, 10)) + 0.5
        expected = kaldi_fbank(torch.roll(wav, k) * g)
        expected = normalize_fbank(pad_or_crop(expected, target_length), fbank.norm_mean, fbank.norm_std)
        got = rolled[index]["source"][0]
        if target_length == 1024:
            assert torch.equal(got, expected)
        else:
            assert torch.allclose(got, expected, rtol=0, atol=5e-4)


def test_pooling_names_old_and_official_still_load(official_path, caplog):
    assert build(official_path, pooling="mean").classifier.pooling == "mean"
    with caplog.at_level("WARNING"):
        assert build(official_path, prediction_mode="MEAN_POOLING").classifier.pooling == "mean"
    assert "model.prediction_mode=MEAN_POOLING is now model.pooling" in caplog.text
    with pytest.raises(ValueError, match="model.pooling must be one of"):
        build(official_path, pooling="max")
