import importlib

import numpy as np
import pytest
import soundfile as sf
import torch

from sslam_plugin.data import read_manifest
from sslam_plugin.features import compute_fbank

norm_stats = importlib.import_module("sslam_plugin.cli.compute_norm_stats")  # scripts/compute_norm_stats.py calls it


def test_statistics_equal_the_pooled_fbank_values(tmp_path, capsys):
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) * s for n, s in ((8000, 0.1), (12000, 0.5))]
    lines = [str(tmp_path)]
    for i, clip in enumerate(clips):
        sf.write(tmp_path / f"c{i}.wav", clip, 16000, subtype="FLOAT")
        lines.append(f"c{i}.wav\t{len(clip)}")
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "c1.wav").unlink()  # an unreadable clip is skipped
    mean, std, used = norm_stats.fbank_statistics(read_manifest(tmp_path / "train.tsv"))
    values = compute_fbank(torch.from_numpy(clips[0])).double()
    assert used == 1
    assert mean == pytest.approx(float(values.mean()), abs=1e-6)
    assert std == pytest.approx(float(values.std(unbiased=False)), abs=1e-6)
    norm_stats.main([str(tmp_path / "train.tsv")])
    assert capsys.readouterr().out.strip() == f"task.norm_mean={mean:.4f} task.norm_std={std:.4f}"


def test_a_missing_manifest_is_one_error_line(tmp_path, capsys):
    from sslam_plugin.cli.compute_norm_stats import main

    assert main([str(tmp_path / "nope.tsv")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'nope.tsv'}: manifest not found"
