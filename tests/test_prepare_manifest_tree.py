"""sslam-prepare-manifest on a tricky folder: the same manifests as a plain walk-and-read of every file.

The scan reads headers in chunks over worker processes and computes the split
there; the oracle here walks the tree with os.listdir, reads each file with
soundfile in this process and splits with is_valid_clip, one file at a time.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from broken_audio import sine, write
from sslam_plugin.data.scan import is_valid_clip, prepare_manifest

EXTENSIONS = ("wav", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff")


@pytest.fixture
def tree(tmp_path) -> Path:
    root, outside = tmp_path / "audio", tmp_path / "elsewhere"
    write(root / "a" / "b" / "c" / "deep.wav", sine(16000, 0.2), 16000)
    write(root / "a" / "UPPER.WAV", sine(22050, 0.3), 22050)
    write(root / "a" / "tone.flac", sine(16000, 0.25), 16000)
    write(root / "with space" / "clip é.wav", sine(16000, 0.1), 16000)
    write(root / "folder.wav" / "inside.wav", sine(8000, 0.1), 8000)  # a folder with an audio suffix
    write(outside / "linked_dir" / "x.wav", sine(16000, 0.15), 16000)
    write(outside / "linked_file.wav", sine(16000, 0.05), 16000)
    os.symlink(outside / "linked_dir", root / "via_link")  # a linked folder outside the root
    os.symlink(outside / "linked_file.wav", root / "a" / "file_link.wav")
    os.symlink(root / "gone.wav", root / "a" / "dangling.wav")
    os.symlink(root, root / "a" / "b" / "loop")  # a link loop
    write(root / "broken" / "zero.wav", np.zeros(0, np.float32), 16000)
    (root / "broken" / "empty.flac").write_bytes(b"")
    (root / "broken" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00not audio" * 8)
    for name in ("notes.txt", "cover.jpg", "take.wav.bak", "README"):
        (root / "a" / name).write_text("not audio\n")
    clip = sine(16000, 0.02)
    for i in range(150):  # enough files for several chunks over two worker processes
        write(root / "many" / f"d{i % 4}" / f"c{i:03d}.wav", clip[: 100 + i], 16000)
    return root


def oracle(root: Path, seed: int, fraction: float):
    """(train lines, valid lines, {rejected path: category}) from a plain walk and one-by-one reads."""
    found, seen = [], set()

    def walk(rel: str) -> None:
        info = os.stat(os.path.join(root, rel))
        if (info.st_dev, info.st_ino) in seen:
            return
        seen.add((info.st_dev, info.st_ino))
        for name in sorted(os.listdir(os.path.join(root, rel))):
            child = f"{rel}/{name}" if rel else name
            if os.path.isdir(os.path.join(root, child)):
                walk(child)
            elif name.lower().endswith(tuple("." + e for e in EXTENSIONS)):
                found.append(child)

    walk("")
    splits, rejected = {"train": [], "valid": []}, {}
    for rel in sorted(found):
        path = os.path.join(root, rel)
        if not os.path.exists(path):
            rejected[rel] = "missing"
        elif os.path.getsize(path) == 0:
            rejected[rel] = "empty file"
        else:
            try:
                frames = sf.info(path).frames
            except Exception:
                rejected[rel] = "unreadable"
                continue
            if frames <= 0:
                rejected[rel] = "no samples"
            else:
                splits["valid" if is_valid_clip(rel, seed, fraction) else "train"].append(f"{rel}\t{frames}")
    return splits["train"], splits["valid"], rejected


@pytest.mark.parametrize("jobs", [1, 2])
def test_manifests_match_a_plain_walk_and_read(tree, tmp_path, jobs):
    train, valid, rejected = oracle(tree, seed=5, fraction=0.2)
    assert len(train) + len(valid) == 157 and valid and set(rejected.values()) == {
        "missing", "empty file", "unreadable", "no samples"}  # the tree has what it should
    dest = tmp_path / f"m{jobs}"
    report = prepare_manifest(tree, dest, valid_fraction=0.2, seed=5, jobs=jobs)
    lines = {name: (dest / f"{name}.tsv").read_text().splitlines() for name in ("train", "valid", "rejected")}
    assert all(lines[name][0] == str(tree.resolve()) for name in lines)
    assert lines["train"][1:] == train
    assert lines["valid"][1:] == valid
    got = dict(line.split("\t") for line in lines["rejected"][1:])
    assert {rel: reason.split(":")[0].split(" (")[0] for rel, reason in got.items()} == rejected
    assert "via_link/x.wav" in "".join(train + valid) and "folder.wav/inside.wav" in "".join(train + valid)
    assert report.found == len(train) + len(valid) + len(rejected)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_counts_files_found_and_headers_read(tree, tmp_path, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    prepare_manifest(tree, tmp_path / "m", valid_fraction=0.0, show_progress=True)
    text = terminal.getvalue()
    train, _, rejected = oracle(tree, 0, 0.0)
    total = len(train) + len(rejected)
    assert f"\rfinding files: {total} files [" in text  # the walk's count, then the headers' bar
    assert f"\rreading headers: 100%" in text and f"| {total}/{total} [" in text
