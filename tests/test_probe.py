"""sslam_plugin.probe: a linear head on cached embeddings trains as it would through the frozen encoder."""

import io
import math
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from sslam_plugin.data import read_manifest
from sslam_plugin.features import FbankConfig, waveform_to_features
from sslam_plugin.models.classifier import AudioClassifier
from sslam_plugin.models.encoder import EncoderConfig
from sslam_plugin.probe import (
    LinearHead,
    ProbeConfig,
    epoch_order,
    extract_embeddings,
    fit_linear_probe,
    lr_at,
    probe_config,
    random_encoder,
)

ARCH = EncoderConfig(embed_dim=32, depth=2, num_heads=2)
FRONTEND = FbankConfig(target_length=48)  # 3 patch rows; the clips below are shorter or longer (pad, crop)


@pytest.fixture
def clips(tmp_path):
    """A manifest of 10 short wav clips of different lengths and (multi-hot) targets for 3 classes."""
    rng = np.random.default_rng(0)
    lines = [str(tmp_path)]
    for i in range(10):
        n = 4000 + 600 * i
        sf.write(tmp_path / f"c{i}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        lines.append(f"c{i}.wav\t{n}")
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    targets = torch.tensor(rng.random((10, 3)) < 0.4, dtype=torch.float32)
    targets[:, 0] = 1 - targets[:, 1]  # every clip has a label (single-label runs use the argmax)
    return read_manifest(tmp_path / "train.tsv"), targets


@pytest.mark.parametrize("multilabel", [True, False])
def test_probe_on_cached_embeddings_equals_training_through_the_frozen_encoder(clips, multilabel):
    manifest, targets = clips
    if not multilabel:
        targets = F.one_hot(targets.argmax(dim=1), 3).float()
    encoder = random_encoder(ARCH, FRONTEND, seed=3)
    cfg = ProbeConfig(multilabel=multilabel, epochs=3, batch_size=4, lr=1e-2, warmup_updates=2, seed=5)
    # batches of 3 clips for the embeddings, 4 for the head: extraction batching must not matter
    features = extract_embeddings({"enc": encoder}, manifest, FRONTEND, batch_size=3)["enc"]
    fitted = fit_linear_probe(features, targets, cfg)

    # the same head trained the fairseq way: the frozen encoder run on every batch's fbank
    fbank = torch.stack([waveform_to_features(torch.from_numpy(sf.read(manifest.full_path(i), dtype="float32")[0]), 16000, FRONTEND)
                         for i in range(len(manifest))])  # (N, T, M)
    classifier = AudioClassifier(ARCH, 3, pooling="cls", use_fc_norm=True, freeze_encoder=True)
    classifier.encoder.load_state_dict(encoder.encoder.state_dict())
    initial = LinearHead(32, 3, seed=cfg.seed)
    classifier.fc_norm.load_state_dict(initial.fc_norm.state_dict())
    classifier.head.load_state_dict(initial.head.state_dict())
    classifier.train()  # the frozen encoder stays in eval mode
    params = [p for p in classifier.parameters() if p.requires_grad]
    assert len(params) == 4  # fc_norm and head, weight and bias each
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.adam_betas)
    total, update = 3 * math.ceil(10 / 4), 0
    for epoch in (1, 2, 3):
        for idx in epoch_order(10, cfg.seed, epoch).split(4):
            optimizer.param_groups[0]["lr"] = lr_at(update, total, cfg)
            logits = classifier(fbank[idx].unsqueeze(1))  # (B, 1, T, M) -> (B, C)
            if multilabel:  # the criterion's summed loss, divided by the clips as fairseq's gradient is
                loss = F.binary_cross_entropy_with_logits(logits, targets[idx], reduction="sum") / len(idx)
            else:
                loss = F.cross_entropy(logits, targets[idx], reduction="sum") / len(idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            update += 1

    assert not torch.allclose(classifier.head.weight, initial.head.weight, atol=1e-3)  # it did train
    torch.testing.assert_close(fitted.head.head.weight, classifier.head.weight, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fitted.head.head.bias, classifier.head.bias, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fitted.head.fc_norm.weight, classifier.fc_norm.weight, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(fitted.head(features), classifier.eval()(fbank.unsqueeze(1)), atol=1e-4, rtol=1e-4)


def test_lr_schedule_warmup_then_cosine():
    cfg = ProbeConfig(lr=1e-3, min_lr=0.0, warmup_updates=4)
    # linear warmup from min_lr, the peak at the end of warmup, half the peak half-way down, min_lr at the end
    assert [lr_at(u, 12, cfg) for u in (0, 2, 4, 8, 12)] == pytest.approx([0.0, 5e-4, 1e-3, 5e-4, 0.0], abs=1e-12)


def test_first_update_moves_every_weight_by_lr():
    """Hand-checked: Adam's first step is lr * g / (|g| + eps), i.e. lr against the gradient's sign."""
    torch.manual_seed(0)
    x, y = torch.randn(6, 8), (torch.rand(6, 2) > 0.5).float()
    cfg = ProbeConfig(epochs=1, batch_size=0, lr=0.01, warmup_updates=0, use_fc_norm=False)
    initial = LinearHead(8, 2, use_fc_norm=False, seed=cfg.seed)
    loss = F.binary_cross_entropy_with_logits(initial(x), y, reduction="sum") / 6
    grad = torch.autograd.grad(loss, initial.head.weight)[0]
    fitted = fit_linear_probe(x, y, cfg)  # one full-batch update at lr_at(0) = lr (no warmup)
    delta = fitted.head.head.weight.detach() - initial.head.weight.detach()
    torch.testing.assert_close(delta, -0.01 * grad.sign(), atol=1e-7, rtol=1e-5)


def test_chooses_the_best_validation_epoch_and_separates_separable_classes():
    rng = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    features = F.one_hot(labels, 3).float() * 2 + 0.3 * torch.randn(60, 3, generator=rng)  # (N, D = 3)
    targets = F.one_hot(labels, 3).float()
    cfg = ProbeConfig(epochs=15, batch_size=8, lr=0.05, warmup_updates=0)
    fitted = fit_linear_probe(features[:40], targets[:40], cfg, valid=(features[40:], targets[40:]))
    assert len(fitted.valid_curve) == 15 and len(fitted.train_loss) == 15
    assert fitted.best_valid == max(fitted.valid_curve)
    assert fitted.best_epoch == fitted.valid_curve.index(max(fitted.valid_curve)) + 1  # the first best epoch
    assert fitted.best_valid == pytest.approx(1.0)  # three well-separated clusters
    assert fitted.train_loss[-1] < fitted.train_loss[0]
    with torch.no_grad():  # the returned head is the best epoch's
        assert (fitted.head(features[40:]).argmax(1) == labels[40:]).all()


def test_same_seed_same_probe_and_random_encoder():
    state = torch.get_rng_state()
    a, b = random_encoder(ARCH, FRONTEND, seed=7), random_encoder(ARCH, FRONTEND, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is left alone
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.encoder.cls_token, random_encoder(ARCH, FRONTEND, seed=8).encoder.cls_token)
    x, y = torch.randn(20, 5), (torch.rand(20, 2) > 0.5).float()
    cfg = ProbeConfig(epochs=4, batch_size=6)
    first, second = fit_linear_probe(x, y, cfg), fit_linear_probe(x, y, cfg)
    assert torch.equal(first.head.head.weight, second.head.head.weight)
    assert sorted(epoch_order(20, 1, 2).tolist()) == list(range(20))
    assert not torch.equal(epoch_order(20, 1, 2), epoch_order(20, 1, 3))  # a fresh order each epoch


def test_probe_settings_from_key_value_overrides():
    cfg = probe_config(["epochs=7", "adam_betas=[0.9, 0.99]", "pooling=mean", "multilabel=false"], ProbeConfig(seed=3))
    assert (cfg.epochs, cfg.adam_betas, cfg.pooling, cfg.multilabel, cfg.seed) == (7, (0.9, 0.99), "mean", False, 3)
    with pytest.raises(ValueError, match="not KEY=VALUE for one of the probe settings"):
        probe_config(["epoch=7"])
    with pytest.raises(ValueError, match="pooling must be one of"):
        probe_config(["pooling=max"])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_embedding_progress_bar_on_a_terminal_stderr_only(clips, monkeypatch):
    manifest, _ = clips
    encoder = random_encoder(ARCH, FRONTEND, seed=1)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    quiet = extract_embeddings({"a": encoder}, manifest, FRONTEND, batch_size=4, show_progress=False)["a"]
    assert terminal.getvalue() == ""
    shown = extract_embeddings({"a": encoder}, manifest, FRONTEND, batch_size=4, show_progress=True, desc="train")["a"]
    assert "train" in terminal.getvalue() and "10/10" in terminal.getvalue()
    assert torch.equal(quiet, shown) and quiet.shape == (10, 32)
