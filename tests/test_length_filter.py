"""The short-clip filter counts samples at 16 kHz, as the model sees clips, whatever each file's rate."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from broken_audio import sine, write, write_manifest
from sslam_plugin.data.manifest import rates_path, read_manifest, read_sample_rates, samples_at_16k, write_short_clips

BIN = Path(sys.executable).parent
MIN = 10000  # the recipes' task.min_sample_size: 0.625 s at 16 kHz

# name -> (rate, seconds); kept when seconds >= 0.625
CLIPS = {
    "a_1.09s_8k.wav": (8000, 1.09),  # 8720 samples: dropped by a count at the file's rate
    "b_1.09s_96k.wav": (96000, 1.09),
    "c_0.7s_8k.wav": (8000, 0.7),  # 5600 samples, 11200 at 16 kHz: kept
    "d_0.6s_96k.wav": (96000, 0.6),  # 57600 samples, 9600 at 16 kHz: dropped
    "e_0.6s_16k.wav": (16000, 0.6),
    "f_1s_44k.wav": (44100, 1.0),
}
KEPT = ["a_1.09s_8k.wav", "b_1.09s_96k.wav", "c_0.7s_8k.wav", "f_1s_44k.wav"]


def make(tmp_path: Path) -> Path:
    root = tmp_path / "audio"
    entries = {}
    for name, (rate, seconds) in CLIPS.items():
        clip = sine(rate, seconds)
        write(root / name, clip, rate)
        entries[name] = len(clip)
    return write_manifest(tmp_path / "train.tsv", root, entries)


def test_samples_at_16k_is_the_resampled_length():
    assert samples_at_16k(8720, 8000) == 17440
    assert samples_at_16k(44100, 44100) == 16000
    assert samples_at_16k(1, 44100) == 1  # ceil, as the resampler's output length
    assert samples_at_16k(1234, 0) == 1234  # unknown rate: as given


def test_the_filter_is_the_same_for_every_rate(tmp_path, caplog):
    path = make(tmp_path)
    with caplog.at_level(logging.WARNING):
        manifest = read_manifest(path, min_samples=MIN, jobs=1)
    assert manifest.files == KEPT
    assert [(c.path, c.sample_rate) for c in manifest.dropped] == [("d_0.6s_96k.wav", 96000), ("e_0.6s_16k.wav", 16000)]
    assert "left out 2 of 6 clips shorter than 10000 samples at 16 kHz (0.625 s; task.min_sample_size)" in caplog.text
    assert "d_0.6s_96k.wav (0.6 s), e_0.6s_16k.wav (0.6 s)" in caplog.text
    # the rates are kept beside the manifest: a second read needs no header
    assert read_sample_rates(path)[("c_0.7s_8k.wav", 5600)] == 8000
    for name in CLIPS:
        (tmp_path / "audio" / name).unlink()
    assert read_manifest(path, min_samples=MIN, jobs=1).files == KEPT
    # which clips were left out, for the run folder
    listed = write_short_clips(manifest, tmp_path / "run", "train")
    assert listed.read_text().splitlines() == [
        str(tmp_path / "audio"), "d_0.6s_96k.wav\t0.6000\t96000", "e_0.6s_16k.wav\t0.6000\t16000"
    ]


def test_a_stale_rate_entry_is_read_again(tmp_path):
    path = make(tmp_path)
    rates_path(path).write_text("c_0.7s_8k.wav\t5600\t96000\n")  # wrong rate, matching count: trusted
    assert "c_0.7s_8k.wav" not in read_manifest(path, min_samples=MIN, jobs=1).files
    rates_path(path).write_text("c_0.7s_8k.wav\t5599\t96000\n")  # another count: the file changed
    assert "c_0.7s_8k.wav" in read_manifest(path, min_samples=MIN, jobs=1).files


def test_unreadable_headers_are_judged_by_their_count(tmp_path):
    path = write_manifest(tmp_path / "t.tsv", tmp_path / "gone", {"short.wav": 9999, "long.wav": 10000})
    manifest = read_manifest(path, min_samples=MIN, jobs=1)
    assert manifest.files == ["long.wav"] and not rates_path(path).exists()


def test_validate_manifest_warns_before_a_run(tmp_path):
    path = make(tmp_path)
    result = subprocess.run(
        [str(BIN / "sslam-validate-manifest"), str(path), "--no-progress", "--jobs", "1"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr  # warnings only
    warned = [line for line in result.stdout.splitlines() if "shorter than the minimum" in line]
    assert [line.split(": ")[2] for line in warned] == ["d_0.6s_96k.wav", "e_0.6s_16k.wav"]
    assert "0.6 s (9600 samples at 16 kHz) < task.min_sample_size=10000 (0.625 s)" in warned[0]
    assert read_sample_rates(path)[("a_1.09s_8k.wav", 8720)] == 8000  # kept for training's filter
    # another recipe's minimum, and none
    result = subprocess.run(
        [str(BIN / "sslam-validate-manifest"), str(path), "--no-progress", "--min-sample-size", "0"],
        capture_output=True, text=True,
    )
    assert "shorter than the minimum" not in result.stdout
