"""Official checkpoints load directly and reproduce the official features."""

import numpy as np
import pytest
import torch

from sslam_plugin.checkpoints.official_names import CheckpointLayoutError, pretrainer_from_official, pretrainer_to_official
from sslam_plugin.data import load_audio
from sslam_plugin.features import waveform_to_features
from sslam_plugin.models import BootstrapPretrainer

from conftest import golden_config


@pytest.fixture(scope="module")
def official(request):
    from conftest import GOLDEN, require_reference

    path = require_reference(GOLDEN) / "official_eat_tiny_checkpoint.pt"
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def loaded(official):
    model = BootstrapPretrainer(golden_config())
    model.load_state_dict(pretrainer_from_official(official["model"]), strict=True)
    return model.eval()


@pytest.mark.parametrize("clip", ["clip_16k_6s", "clip_32k_11s"])
def test_golden_features_from_wav(loaded, golden_dir, clip):
    waveform, rate = load_audio(golden_dir / f"{clip}.wav")
    fbank = waveform_to_features(waveform, rate)
    with torch.no_grad():
        feats = loaded.encoder(fbank[None, None]).x[0].numpy()
    ref = np.load(golden_dir / f"{clip}.features.npy")
    assert feats.shape == ref.shape == (513, 192)
    assert np.abs(feats - ref).max() < 1e-4


def test_teacher_comes_from_ema(loaded, official):
    ema = official["model"]["_ema"]["blocks.0.attn.qkv.weight"]
    student = official["model"]["blocks.0.attn.qkv.weight"]
    assert not torch.equal(ema, student)  # two updates apart
    assert torch.equal(loaded.teacher.encoder.blocks[0].attn.qkv.weight, ema)


def test_state_dict_round_trips_to_official_names(loaded, official):
    ours = pretrainer_to_official(loaded.state_dict())
    assert set(ours) == set(official["model"])
    assert set(ours["_ema"]) == set(official["model"]["_ema"])
    for key, value in official["model"].items():
        if key != "_ema":
            assert torch.equal(ours[key], value), key


def test_unknown_keys_are_listed(official):
    state = dict(official["model"])
    state["modality_encoders.AUDIO.something"] = torch.zeros(1)
    with pytest.raises(CheckpointLayoutError, match="modality_encoders.AUDIO.something"):
        pretrainer_from_official(state)
