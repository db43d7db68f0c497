"""scripts/sed_demo.py's own logic at tiny size: the head trained on cached features is the saved detector.

The demo trains the frame head on cached, layer-normalised row features instead of running the
encoder at every step; these tests check that the trained model computes on fbank exactly what
it was trained on, that the saved file loads back through ``load_detector`` unchanged, and that
decoding settings tuned on a split find the thresholds that recover its events.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from sslam_plugin.detection.detector import SoundEventDetector, load_detector
from sslam_plugin.detection.head import FrameDetector
from sslam_plugin.detection.strong_labels import Event
from sslam_plugin.detection.targets import FrameGrid, frame_targets
from sslam_plugin.features import FbankConfig
from sslam_plugin.models.encoder import EncoderConfig

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sed_demo.py"
WINDOW = 64  # fbank frames: 4 patch rows


@pytest.fixture(scope="module")
def sed_demo():
    spec = importlib.util.spec_from_file_location("sed_demo_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _detector(row_pooling: str) -> SoundEventDetector:
    torch.manual_seed(0)
    model = FrameDetector(EncoderConfig(embed_dim=32, depth=1, num_heads=2), 2, frames_per_row=4, freeze_encoder=True,
                          row_pooling=row_pooling)
    frontend = FbankConfig(target_length=WINDOW, norm_mean=-4.0, norm_std=4.0)
    return SoundEventDetector(model, frontend, FrameGrid(WINDOW, 0.04), ["a", "b"]).eval()


def test_head_trained_on_cached_features_is_the_saved_detector(sed_demo, tmp_path):
    detector = _detector("concat")
    model = detector.frame_model
    fbank = torch.randn(6, 1, WINDOW, 128)
    with torch.no_grad():
        features = model.row_features(fbank)  # (6, 4, 8 * 32)
    # class a is active where the first feature is positive: learnable from the features
    row_active = (features[..., 0] > 0).float()  # (6, 4)
    targets = torch.stack([row_active.repeat_interleave(4, dim=1), torch.zeros(6, 16)], dim=-1)  # (6, 16, 2)
    with torch.no_grad():
        model.norm.weight.fill_(3.0)  # train_head puts the norm back to the identity
    losses = sed_demo.train_head(model, features, targets, steps=60, lr=0.05)
    assert losses[-1] < 0.5 * losses[0]
    cached = sed_demo.cached_posteriors(model, features)  # (6, 16, 2)
    with torch.no_grad():
        direct = torch.sigmoid(model(fbank)).numpy()
    assert np.allclose(cached, direct, atol=1e-5)

    sed_demo.save_detector(detector, tmp_path / "detector.pt")
    loaded = load_detector(tmp_path / "detector.pt")
    assert loaded.labels == ["a", "b"] and loaded.frame_model.row_pooling == "concat"
    assert loaded.grid == detector.grid and loaded.frontend.norm_mean == -4.0
    with torch.no_grad():
        assert torch.allclose(loaded.frame_model(fbank), model(fbank), atol=1e-6)


def test_tuned_thresholds_recover_the_events(sed_demo):
    hop, frames = 0.04, 100  # 4 s clips
    events = [[Event("c0", 0.4, 1.2, "a"), Event("c0", 2.0, 3.0, "b")], [Event("c1", 1.0, 2.6, "a")]]
    split = {"clip_ids": ["c0", "c1"], "events": events}
    index = {"a": 0, "b": 1}
    # posteriors 0.35 inside events, 0.25 outside: only a threshold between the two recovers them
    posteriors = np.stack([
        0.25 + 0.1 * frame_targets([(index[e.label], e.onset, e.offset) for e in clip], frames, hop, 2).numpy()
        for clip in events
    ])
    window, thresholds = sed_demo.tune_decoding(posteriors, split, ["a", "b"], hop, [4.0, 4.0],
                                                thresholds=(0.2, 0.3, 0.4), median_windows=(0.0,))
    assert window == 0.0 and thresholds == {"a": 0.3, "b": 0.3}
