"""scripts/extract_features.py: outputs, granularities, shards, resuming."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sslam_plugin.inference import PretrainedAudioEncoder, load_encoder

from export_helpers import run_python, script, tiny_pretraining_checkpoint, write_wav

OLD = 1_000_000_000  # a past mtime (seconds): an untouched output keeps it


@pytest.fixture(scope="module")
def extract():
    return script("extract_features").main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(tiny_pretraining_checkpoint(target_length=128), path)  # 128 frames = 1.28 s windows
    return path


@pytest.fixture
def audio(tmp_path) -> Path:
    root = tmp_path / "audio"
    write_wav(root / "a.wav", 0.5, seed=1)
    write_wav(root / "b.wav", 1.0, seed=2)
    write_wav(root / "long.wav", 3.0, seed=3)
    write_wav(root / "sub" / "c.wav", 0.8, rate=32000, seed=4)
    write_wav(root / "sub" / "d.flac", 1.1, seed=5)
    return root


NAMES = ["a", "b", "long", "sub/c", "sub/d"]


def outputs(out: Path):
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy"))


def common(batch_size: int = 2):
    return ["--device", "cpu", "--num-workers", "0", "--batch-size", str(batch_size)]


def test_folder_outputs_match_the_api(extract, checkpoint, audio, tmp_path):
    out = tmp_path / "out"
    assert extract([str(checkpoint), str(audio), str(out), *common()]) == 0
    assert outputs(out) == [f"{n}.npy" for n in NAMES]
    model = load_encoder(checkpoint)
    from sslam_plugin.data import load_audio

    for name, suffix in zip(NAMES, [".wav"] * 4 + [".flac"]):
        waveform, rate = load_audio(audio / (name + suffix))
        [expected] = model.extract_clips([waveform], rate, "patch")
        assert np.allclose(np.load(out / f"{name}.npy"), expected.features.numpy(), atol=1e-5), name
    assert np.load(out / "a.npy").shape == (3 * 8, 32)  # 0.5 s = 48 frames -> 3 rows of audio
    assert np.load(out / "long.npy").shape == (8 * 8, 32)  # cropped to 128 frames


def test_resume_recomputes_only_missing_outputs(extract, checkpoint, audio, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(checkpoint), str(audio), str(out), *common()]
    assert extract(args) == 0
    before = {n: np.load(out / f"{n}.npy") for n in NAMES}
    for n in NAMES:
        os.utime(out / f"{n}.npy", (OLD, OLD))
    (out / "b.npy").unlink()
    (out / "b.npy.partial").write_bytes(b"half a file")  # a write interrupted earlier
    capsys.readouterr()
    assert extract(args) == 0
    assert "extracted 1 clips" in capsys.readouterr().out
    for n in NAMES:
        recomputed = (out / f"{n}.npy").stat().st_mtime != OLD
        assert recomputed == (n == "b"), n
        assert np.array_equal(np.load(out / f"{n}.npy"), before[n]), n
    assert not (out / "b.npy.partial").exists()


def test_interrupted_run_resumes_without_recomputing(extract, checkpoint, audio, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = [str(checkpoint), str(audio), str(out), *common(batch_size=2)]
    real = PretrainedAudioEncoder.encode_windows
    calls = []

    def interrupted(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the run during the second batch
        return real(self, *a, **k)

    monkeypatch.setattr(PretrainedAudioEncoder, "encode_windows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(args)
    assert outputs(out) == ["a.npy", "b.npy"]  # the first batch only
    for n in ("a", "b"):
        os.utime(out / f"{n}.npy", (OLD, OLD))
    counted = []

    def counting(self, windows, *a, **k):
        counted.extend(windows)
        return real(self, windows, *a, **k)

    monkeypatch.setattr(PretrainedAudioEncoder, "encode_windows", counting)
    assert extract(args) == 0
    assert len(counted) == 3  # long, sub/c, sub/d
    assert outputs(out) == [f"{n}.npy" for n in NAMES]
    assert all((out / f"{n}.npy").stat().st_mtime == OLD for n in ("a", "b"))


def test_time_granularity_windows_and_shards(extract, checkpoint, audio, tmp_path):
    out = tmp_path / "shards"
    args = [str(checkpoint), str(audio), str(out), *common(), "--granularity", "time",
            "--long-clips", "windows", "--shard-size", "2"]
    assert extract(args) == 0
    shards = sorted(p.name for p in out.glob("*.npz"))
    assert shards == ["shard_00000.npz", "shard_00001.npz", "shard_00002.npz"]
    with np.load(out / "shard_00001.npz") as shard:
        assert sorted(shard.files) == ["long.wav", "long.wav#timestamps", "sub/c.wav", "sub/c.wav#timestamps"]
        long, stamps = shard["long.wav"], shard["long.wav#timestamps"]
    assert long.shape == (19, 32)  # 3 s = 298 frames -> 3 windows of 128 -> 8 + 8 + 3 rows
    assert np.allclose(stamps, 0.08 + 0.16 * np.arange(19))
    os.utime(out / "shard_00000.npz", (OLD, OLD))
    os.utime(out / "shard_00002.npz", (OLD, OLD))
    (out / "shard_00001.npz").unlink()
    assert extract(args) == 0
    assert (out / "shard_00001.npz").stat().st_mtime != OLD
    assert all((out / s).stat().st_mtime == OLD for s in ("shard_00000.npz", "shard_00002.npz"))
    # other settings into the same folder are refused
    assert extract(args[:-2] + ["--shard-size", "0"]) == 1


def test_manifest_input_and_cli(checkpoint, audio, tmp_path):
    manifest = tmp_path / "clips.tsv"
    manifest.write_text(f"{audio}\na.wav\t8000\nsub/c.wav\t25600\n")
    out = tmp_path / "out"
    result = run_python(["scripts/extract_features.py", str(checkpoint), str(manifest), str(out),
                         "--granularity", "utterance", "--num-workers", "1", "--device", "cpu"])
    assert result.returncode == 0, result.stderr
    assert "extracted 2 clips" in result.stdout
    assert outputs(out) == ["a.npy", "sub/c.npy"]
    assert np.load(out / "a.npy").shape == (32,)


def test_bad_clip_is_reported_and_retried(extract, checkpoint, audio, tmp_path, capsys):
    (audio / "broken.wav").write_bytes(b"not audio")
    out = tmp_path / "out"
    assert extract([str(checkpoint), str(audio), str(out), *common()]) == 1
    assert "1 failed" in capsys.readouterr().out
    assert "broken.npy" not in outputs(out) and len(outputs(out)) == 5


def test_packed_manifest_outputs_are_named_by_clip_and_equal_the_loose_ones(extract, checkpoint, audio, tmp_path):
    """Every clip of a zip shard shares the archive's path: outputs go by the member's clip id."""
    from sslam_plugin.data.packing import pack_manifest

    manifest = tmp_path / "clips.tsv"
    manifest.write_text(f"{audio}\na.wav\t8000\nsub/c.wav\t25600\nsub/d.flac\t17600\n")
    pack_manifest(manifest, tmp_path / "packed", shard_size=10)
    packed_lines = (tmp_path / "packed" / "clips.tsv").read_text().splitlines()[1:]
    assert all(".zip:" in line for line in packed_lines)  # one shard, three entries
    loose, packed = tmp_path / "loose_out", tmp_path / "packed_out"
    assert extract([str(checkpoint), str(manifest), str(loose), *common()]) == 0
    assert extract([str(checkpoint), str(tmp_path / "packed" / "clips.tsv"), str(packed), *common()]) == 0
    assert outputs(packed) == outputs(loose) == ["a.npy", "sub/c.npy", "sub/d.npy"]
    for name in outputs(loose):
        assert np.array_equal(np.load(packed / name), np.load(loose / name)), name
