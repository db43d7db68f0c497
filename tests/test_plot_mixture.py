"""sslam-plot-mixture: the figure's data is what the training code builds for that batch."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import torch

from sslam_plugin.cli.plot_mixture import main as plot_mixture, mixture_panels
from sslam_plugin.data.audio import load_audio
from sslam_plugin.data.manifest import read_manifest
from sslam_plugin.features import FbankConfig, waveform_to_features
from sslam_plugin.masking import inverse_block_mask, mask_rng
from sslam_plugin.mixing import MixingConfig, partial_mix, unmixed_frames

DEMO = ["--target-length", "256", "--window-frames", "64"]


def test_writes_a_png_of_the_expected_size(demo_data, tmp_path):
    out = tmp_path / "figs" / "mixture.png"
    assert plot_mixture([str(demo_data / "data" / "manifests" / "train.tsv"), "--clips", "2", "-o", str(out), *DEMO]) == 0
    height, width = matplotlib.image.imread(out).shape[:2]
    assert (width, height) == (4 * 400, 2 * 260)  # 4 panels of 4 in, 2.6 in per clip, 100 dpi


def test_panels_are_the_training_features_mixture_and_mask(demo_data):
    manifest = demo_data / "data" / "manifests" / "train.tsv"
    fbank = FbankConfig(target_length=256)
    mixing = MixingConfig(enabled=True, unmixed_window_frames=64)
    panels = mixture_panels(manifest, [3, 4], fbank, mixing, seed=1, epoch=2)
    clips = read_manifest(manifest)
    for row, index in enumerate([3, 4]):  # the front end, straight from the file
        expected = waveform_to_features(*load_audio(clips.full_path(index)), fbank)
        assert torch.allclose(panels.clips[row], expected, atol=1e-5)
    assert panels.plan.partners.tolist() == [1, 0]  # previous clip in the batch
    # the mixture panel is mixing's own output for the plan's windows
    unmixed = unmixed_frames(panels.plan.windows, panels.plan.window_frames, 256)
    mixed = partial_mix(panels.clips.unsqueeze(1), panels.clips[[1, 0]].unsqueeze(1), unmixed, "max").squeeze(1)
    assert torch.equal(panels.mixtures, mixed) and torch.equal(panels.unmixed, unmixed)
    assert unmixed.sum() == 2 * 64 and unmixed.shape == (1, 256)
    inside = unmixed[0]
    assert torch.equal(panels.mixtures[:, inside], panels.clips[:, inside])
    assert not torch.equal(panels.mixtures[:, ~inside], panels.clips[:, ~inside])
    # the student panel: copy 0 of the masks the training dataset draws for that clip and epoch
    for row, index in enumerate([3, 4]):
        training = inverse_block_mask((16, 8), 8, 0.8, 0.07, 5, rng=mask_rng(1, 2, index))
        assert np.array_equal(panels.masks[row].numpy(), training[0])
    assert int((~panels.masks).sum(dim=1)[0]) == int(128 * 0.2)


def test_bad_requests_are_named(demo_data, tmp_path, capsys):
    manifest = str(demo_data / "data" / "manifests" / "train.tsv")
    assert plot_mixture([manifest, "--clips", "1", "-o", str(tmp_path / "x.png")]) == 2
    assert "at least 2 clips" in capsys.readouterr().err
    assert plot_mixture([manifest, "--indices", "0", "9999", "-o", str(tmp_path / "x.png")]) == 2
    assert "9999" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plot_mixture([manifest, "--operation", "sum"])
