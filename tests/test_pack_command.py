"""sslam-pack: zip shards and a manifest pointing into them; resumable; validated; labels and side files
kept; trained through fairseq-hydra-train and resumed exactly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from broken_audio import write_manifest
from conftest import hydra_train, logged
from sslam_plugin.cli.pack import main as pack_main
from sslam_plugin.data import read_manifest
from sslam_plugin.data.audio import load_audio
from sslam_plugin.data.labels import LabelSet, labels_for_files, read_clip_labels
from sslam_plugin.data.packing import pack_manifest
from sslam_plugin.data.validate import validate_manifest

CLIPS = {"cat/a.wav": 8000, "cat/b.flac": 9000, "dog/c.wav": 10000, "gone.wav": 5, "dog/d.flac": 11000}
LABELS = {"a": "cat", "b": "cat", "c": "dog", "gone": "dog", "d": "dog"}


@pytest.fixture
def source(tmp_path) -> Path:
    """A labelled manifest of 5 clips, one deleted since it was written, with weights and rates beside it."""
    root = tmp_path / "audio"
    rng = np.random.default_rng(0)
    for rel, frames in CLIPS.items():
        if rel != "gone.wav":
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, rng.uniform(-0.5, 0.5, frames), 16000, subtype="PCM_16")
    folder = tmp_path / "manifests"
    folder.mkdir()
    path = write_manifest(folder / "train.tsv", root, CLIPS)
    (folder / "train.lbl").write_text("".join(f"{k}\t{v}\n" for k, v in LABELS.items()))
    (folder / "label_descriptors.csv").write_text("0,cat,Cat\n1,dog,Dog\n")
    (folder / "train_weights.csv").write_text("".join(f"{w}\n" for w in (0.1, 0.2, 0.3, 0.4, 0.5)))
    (folder / "train.rates").write_text("".join(f"{rel}\t{n}\t16000\n" for rel, n in CLIPS.items()))
    return path


def shard_files(dest: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((dest / "shards").iterdir())}


def test_pack_writes_shards_manifest_and_side_files_that_validate(source, tmp_path, capsys):
    dest = tmp_path / "packed"
    assert pack_main([str(source), str(dest), "--shard-size", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 clips in 3 shards" in out and "1 left out" in out and "rejected_train.tsv" in out
    manifest = read_manifest(dest / "train.tsv")
    assert str(manifest.root) == os.path.realpath(dest)
    assert list(manifest.num_samples) == [8000, 9000, 10000, 11000]
    assert [f.split(":")[0] for f in manifest.files] == [
        "shards/train-00000.zip", "shards/train-00000.zip", "shards/train-00001.zip", "shards/train-00002.zip"]
    for i, rel in enumerate(r for r in CLIPS if r != "gone.wav"):
        assert torch.equal(load_audio(manifest.full_path(i))[0], load_audio(source.parent.parent / "audio" / rel)[0])
    assert (dest / "rejected_train.tsv").read_text().splitlines()[1:] == ["gone.wav\tfile not found"]
    # side files: labels copied as they are, weights of the packed clips, rates of the new entries
    assert (dest / "train.lbl").read_text() == (source.parent / "train.lbl").read_text()
    assert (dest / "train_weights.csv").read_text().split() == ["0.1", "0.2", "0.3", "0.5"]
    assert [line.split("\t")[2] for line in (dest / "train.rates").read_text().splitlines()] == ["16000"] * 4
    labels = LabelSet.from_ids(["cat", "dog"])
    by_clip = read_clip_labels(dest / "train.lbl", labels)
    assert [by_clip[k] for k in ("a", "b", "c", "d")] == [[0], [0], [1], [1]]
    report = validate_manifest(dest / "train.tsv", decode=True)  # labels found through the member names
    assert report.checked == 4 and report.problems == [], report.problems
    assert sorted(report.sample_rates.elements()) == [16000] * 4


def test_a_stopped_pack_resumes_keeping_complete_shards(source, tmp_path, caplog):
    dest = tmp_path / "packed"
    pack_manifest(source, dest, shard_size=2)
    first, manifest = shard_files(dest), (dest / "train.tsv").read_text()
    inodes = {name: (dest / "shards" / name).stat().st_ino for name in first}
    # a stop: shard 1 cut off under its final name, shard 2 only half written, no manifest yet
    cut = dest / "shards/train-00001.zip"
    cut.write_bytes(first[cut.name][: len(first[cut.name]) // 2])
    last = dest / "shards/train-00002.zip"
    last.rename(last.with_name(last.name + ".partial"))
    (dest / "train.tsv").unlink()
    report = pack_manifest(source, dest, shard_size=2)
    assert report.reused == 1 and report.shards == 3 and report.clips == 4
    assert shard_files(dest) == first  # the same bytes as an uninterrupted run
    assert (dest / "train.tsv").read_text() == manifest
    assert (dest / "shards/train-00000.zip").stat().st_ino == inodes["train-00000.zip"]  # kept, not rewritten
    assert "train-00001.zip is not a complete shard" in caplog.text
    # a third run finds every shard complete and writes nothing
    inodes = {name: (dest / "shards" / name).stat().st_ino for name in first}
    again = pack_manifest(source, dest, shard_size=2)
    assert again.reused == 3 and {n: (dest / "shards" / n).stat().st_ino for n in first} == inodes
    # another shard size: the shards no longer hold the expected clips and are written again
    other = pack_manifest(source, dest, shard_size=3)
    assert other.reused == 0 and other.clips == 4
    assert [line.split("\t")[0].split(":")[0] for line in (dest / "train.tsv").read_text().splitlines()[1:]] == [
        "shards/train-00000.zip"] * 3 + ["shards/train-00001.zip"]  # the deleted clip was the 4th


def test_packing_a_packed_or_hdf5_manifest_keeps_samples_and_clip_ids(source, tmp_path):
    h5py = pytest.importorskip("h5py")
    zipped = tmp_path / "zipped"
    pack_manifest(source, zipped, shard_size=10)
    wave = np.linspace(-0.5, 0.5, 7000, dtype=np.float32)
    with h5py.File(zipped / "part.h5", "w") as h5:
        h5.create_dataset("Yh5", data=wave)
    lines = (zipped / "train.tsv").read_text().splitlines() + ["part.h5/Yh5\t7000"]
    mixed = tmp_path / "mixed" / "train.tsv"
    mixed.parent.mkdir()
    mixed.write_text("\n".join(lines) + "\n")
    (mixed.parent / "train.lbl").write_text("a\tcat\nb\tcat\nc\tdog\nd\tdog\nYh5\tdog\n")
    again = tmp_path / "again"
    pack_manifest(mixed, again, shard_size=10)
    before, after = read_manifest(mixed), read_manifest(again / "train.tsv")
    for i in range(len(before)):
        assert torch.equal(load_audio(after.full_path(i))[0], load_audio(before.full_path(i))[0])
    labels = LabelSet.from_ids(["cat", "dog"])
    by_clip = read_clip_labels(again / "train.lbl", labels)
    names = [f.split("\t")[0] for f in after.files]
    assert labels_for_files([f"{after.root}/{n}" for n in names], by_clip, "train.lbl") == [[0], [0], [1], [1], [1]]


def test_pack_refuses_to_overwrite_its_source_and_a_bad_shard_size(source, capsys):
    assert pack_main([str(source), str(source.parent), "--no-progress"]) == 1
    assert "is the manifest being packed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pack_main([str(source), "x", "--shard-size", "0"])


# --- training from packed shards ----------------------------------------------------------------------

TINY = [
    "model.encoder.embed_dim=32", "model.encoder.depth=2", "model.encoder.num_heads=2",
    "model.decoder.dim=32", "model.decoder.layers=2", "model.decoder.groups=4",
    "model.clone_batch=2", "model.average_top_k_layers=2",
    "task.data=packed", "task.target_length=64", "dataset.batch_size=4", "dataset.num_workers=0",
    "common.log_interval=1", "optimization.max_update=3", "checkpoint.save_interval_updates=2",
]


def test_packed_shards_train_and_resume_exactly(demo_data, tmp_path):
    """Stage 1 from zip shards; a run stopped after update 2's save and relaunched ends as a straight run."""
    pytest.importorskip("fairseq")
    for split in ("train", "valid"):
        pack_manifest(demo_data / "data/manifests" / f"{split}.tsv", tmp_path / "packed", shard_size=16)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    result = hydra_train("pretrain", "demo_stage1", [f"hydra.run.dir={straight}", *TINY], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert sorted(logged(log, "loss")) == [1, 2, 3] and "bad_clips=0" in log.replace(" ", "")
    assert "reading the sample rates" not in log  # sslam-pack wrote them all beside the manifest
    # the stop: the run folder as it was right after update 2's checkpoint
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(straight / "checkpoints/checkpoint_1_2.pt", resumed / "checkpoints/checkpoint_last.pt")
    again = hydra_train("pretrain", "demo_stage1", [f"hydra.run.dir={resumed}", *TINY], tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    second = again.stdout + again.stderr
    assert "@ 2 updates" in second and sorted(logged(second, "loss")) == [3]
    assert logged(second, "loss") == {u: v for u, v in logged(log, "loss").items() if u > 2}
    a = torch.load(straight / "checkpoints/checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
    b = torch.load(resumed / "checkpoints/checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
    for key, value in a.items():
        if key == "_ema":
            assert all(torch.equal(v, b["_ema"][k]) for k, v in value.items())
        else:
            assert torch.equal(value, b[key]), key
