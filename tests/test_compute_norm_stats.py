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

    assert main([str(tmp_path / "nope.tsv")]) == 1  # 2 is for usage errors
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'nope.tsv'}: manifest not found"


def test_installed_command_fails_with_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    command = str(Path(sys.executable).parent / "sslam-norm-stats")
    result = subprocess.run([command, str(tmp_path / "nope.tsv")], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (1, f"error: {tmp_path / 'nope.tsv'}: manifest not found\n")
    result = subprocess.run([command, str(tmp_path / "nope.tsv"), "--max-frames", "-1"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.splitlines()[-1].endswith("--max-frames >= 0")


@pytest.mark.parametrize("rate", [16000, 44100])
def test_long_clips_give_their_first_max_frames(tmp_path, rate):
    from sslam_plugin.features import resample_to

    rng = np.random.default_rng(1)
    clip = (rng.standard_normal(rate * 8) * np.linspace(0.01, 1.0, rate * 8)).astype(np.float32)  # louder later
    sf.write(tmp_path / "long.wav", clip, rate, subtype="FLOAT")
    (tmp_path / "train.tsv").write_text(f"{tmp_path}\nlong.wav\t{len(clip)}\n")
    manifest = read_manifest(tmp_path / "train.tsv")
    whole = compute_fbank(resample_to(torch.from_numpy(clip), rate)).double()  # (798, 128)
    for frames in (100, 250):
        mean, std, used = norm_stats.fbank_statistics(manifest, max_frames=frames)
        first = whole[:frames]
        assert used == 1
        # the crop's mean is removed instead of the file's: round-off only
        assert mean == pytest.approx(float(first.mean()), abs=1e-4)
        assert std == pytest.approx(float(first.std(unbiased=False)), abs=1e-4)
    mean, _, _ = norm_stats.fbank_statistics(manifest, max_frames=0)
    assert mean == pytest.approx(float(whole.mean()), abs=1e-6)
    assert abs(mean - norm_stats.fbank_statistics(manifest, max_frames=100)[0]) > 1.0  # the cap matters here
