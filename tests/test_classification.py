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
    model = build(official_path, linear_eval=True, mixup_alpha=0.8, patch_mask_ratio=0.2).train()
    assert not model.classifier.encoder.training  # eval mode even while training the head
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


def test_layer_decay_scales(official_path):
    model = build(official_path, layer_decay=0.5)
    classifier = model.classifier  # the model declares depths and groups; depth 2
    assert classifier.layer_depth("encoder.patch_embed.proj.weight") == 0
    assert classifier.layer_depth("encoder.blocks.1.attn.qkv.weight") == 2
    assert classifier.layer_depth("head.weight") == 3
    no_decay = classifier.no_weight_decay()
    assert {"encoder.cls_token", "encoder.input_norm.weight", "head.bias", "fc_norm.weight"} <= no_decay
    assert not no_decay & {"head.weight", "encoder.blocks.0.attn.qkv.weight", "encoder.patch_embed.proj.weight"}
    scales = {n: p.optim_overrides["optimizer"]["lr_scale"] for n, p in model.classifier.named_parameters()}
    assert scales["head.weight"] == 1.0
    assert scales["encoder.blocks.1.attn.qkv.weight"] == 0.5
    assert scales["encoder.cls_token"] == 0.125
    assert model.classifier.encoder.cls_token.param_group == "no_weight_decay"


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
    ], cwd=demo_data)
    assert resumed.returncode != 0
    assert "the run's checkpoint was trained with other class indices than" in resumed.stdout + resumed.stderr
    assert "the same 10 labels in another order (first difference at index 0: 'low_hum'" in resumed.stdout + resumed.stderr


def test_roll_shifts_training_clips_in_time_reproducibly(demo_data):
    """task.roll_aug: each training clip circularly shifted, from (seed, epoch, index)."""
    from sslam_plugin.data import read_manifest
    from sslam_plugin.features import FbankConfig
    from sslam_plugin.data.labelled import LabelledClips

    manifest = read_manifest(demo_data / "data" / "manifests" / "train.tsv")
    labels = [[0]] * len(manifest)
    fbank = FbankConfig(target_length=128)
    plain = LabelledClips(manifest, labels, 10, fbank, training=True, roll=False, seed=5)
    rolled = LabelledClips(manifest, labels, 10, fbank, training=True, roll=True, seed=5)

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


def test_pooling_names_old_and_official_still_load(official_path, caplog):
    assert build(official_path, pooling="mean").classifier.pooling == "mean"
    with caplog.at_level("WARNING"):
        assert build(official_path, prediction_mode="MEAN_POOLING").classifier.pooling == "mean"
    assert "model.prediction_mode=MEAN_POOLING is now model.pooling" in caplog.text
    with pytest.raises(ValueError, match="model.pooling: pooling must be one of"):
        build(official_path, pooling="max")
