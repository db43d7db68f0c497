"""scripts/prepare_manifest.py and sslam_plugin.data.scan on a tree of good and broken files."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from broken_audio import GOOD, load_script, make_collection, sine, write
from sslam_plugin.data import read_manifest
from sslam_plugin.data.scan import (
    AudioHeader,
    find_audio_files,
    is_valid_clip,
    prepare_manifest,
    probe_header,
)

KEPT = dict(GOOD, **{"nan.wav": 16000, "short.wav": 100})  # headers are fine; decoding is checked later
REJECTED = {
    "corrupt.wav": "unreadable: Format not recognised.",
    "dangling.wav": "missing",
    "empty.wav": "empty file (0 bytes)",
    "zero.wav": "no samples: header says 0 frames",
}


@pytest.fixture
def collection(tmp_path) -> Path:
    root = tmp_path / "audio"
    make_collection(root)
    return root


def read_lines(path: Path) -> list:
    return path.read_text().splitlines()


def test_probe_header_reads_rate_channels_and_frames(collection):
    assert probe_header(str(collection / "stereo.wav")) == AudioHeader(16000, 16000, 2)
    assert probe_header(str(collection / "hi_44k.wav")) == AudioHeader(44100, 44100, 1)
    assert probe_header(str(collection / "u8.wav")) == AudioHeader(16000, 16000, 1)
    assert probe_header(str(collection / "good.flac")).seconds == pytest.approx(0.5)
    for name, reason in REJECTED.items():
        assert probe_header(str(collection / name)) == reason, name


def test_find_audio_files_is_recursive_sorted_and_case_insensitive(collection):
    found = find_audio_files(collection)
    assert found == sorted(list(KEPT) + list(REJECTED))
    assert "notes.txt" not in found
    assert find_audio_files(collection, ["flac"]) == ["good.flac"]
    assert find_audio_files(collection, ["wav"], path_must_contain="sub/") == ["sub/dir/nested.WAV"]


def test_find_audio_files_survives_a_link_loop(collection):
    os.symlink(collection, collection / "sub" / "loop")
    assert find_audio_files(collection) == sorted(list(KEPT) + list(REJECTED))


def test_prepare_manifest_keeps_good_lists_rejected_with_reasons(collection, tmp_path):
    dest = tmp_path / "manifests"
    report = prepare_manifest(collection, dest, valid_fraction=0.0)
    lines = read_lines(dest / "train.tsv")
    assert lines[0] == os.path.realpath(collection)
    assert lines[1:] == [f"{rel}\t{KEPT[rel]}" for rel in sorted(KEPT)]
    assert not (dest / "valid.tsv").exists()
    rejected = read_lines(dest / "rejected.tsv")
    assert rejected[0] == os.path.realpath(collection)
    assert rejected[1:] == [f"{rel}\t{reason}" for rel, reason in sorted(REJECTED.items())]
    assert report.found == len(KEPT) + len(REJECTED)
    assert report.split_counts == {"train": len(KEPT)}
    assert report.rejected == {"unreadable": 1, "missing": 1, "empty file": 1, "no samples": 1}
    summary = report.summary()
    assert f"kept {len(KEPT)}" in summary and "rejected 4" in summary and "rejected.tsv" in summary
    # the manifest reads back with the existing reader
    manifest = read_manifest(dest / "train.tsv")
    assert manifest.files == sorted(KEPT) and manifest.num_samples.tolist() == [KEPT[r] for r in sorted(KEPT)]


def test_duration_filters(collection, tmp_path):
    report = prepare_manifest(collection, tmp_path / "m", valid_fraction=0.0, min_seconds=0.4, max_seconds=1.0)
    kept = [line.split("\t")[0] for line in read_lines(tmp_path / "m" / "train.tsv")[1:]]
    # 0.3 s nested and 100-sample short clips are too short; none is over 1.0 s (44100 frames at 44.1 kHz = 1 s)
    assert kept == sorted(set(KEPT) - {"sub/dir/nested.WAV", "short.wav"})
    reasons = dict(line.split("\t") for line in read_lines(tmp_path / "m" / "rejected.tsv")[1:])
    assert reasons["sub/dir/nested.WAV"] == "too short: 0.300 s < --min-seconds 0.4"
    assert report.rejected["too short"] == 2
    prepare_manifest(collection, tmp_path / "n", valid_fraction=0.0, max_seconds=0.6)
    reasons = dict(line.split("\t") for line in read_lines(tmp_path / "n" / "rejected.tsv")[1:])
    assert reasons["hi_44k.wav"] == "too long: 1.000 s > --max-seconds 0.6"
    assert "good.flac" not in reasons


def test_valid_split_is_a_pure_function_of_seed_and_path():
    names = [f"clip_{i:04d}.wav" for i in range(2000)]
    valid = {n for n in names if is_valid_clip(n, 7, 0.1)}
    assert 140 < len(valid) < 260  # ~200 expected
    # more files later: the earlier clips keep their split
    more = names + [f"new_{i}.wav" for i in range(500)]
    assert {n for n in more[:2000] if is_valid_clip(n, 7, 0.1)} == valid
    assert {n for n in names if is_valid_clip(n, 8, 0.1)} != valid
    assert not any(is_valid_clip(n, 7, 0.0) for n in names)
    assert all(is_valid_clip(n, 7, 1.0) for n in names)


def test_output_is_deterministic_for_a_seed_and_any_job_count(tmp_path):
    root = tmp_path / "many"
    clip = sine(16000, 0.05)
    for i in range(40):
        write(root / f"d{i % 3}" / f"c{i:02d}.wav", clip[: 100 + i], 16000)
    prepare_manifest(root, tmp_path / "a", valid_fraction=0.3, seed=3, jobs=1)
    prepare_manifest(root, tmp_path / "b", valid_fraction=0.3, seed=3, jobs=2)
    for name in ("train.tsv", "valid.tsv", "rejected.tsv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name
    train = read_lines(tmp_path / "a" / "train.tsv")[1:]
    valid = read_lines(tmp_path / "a" / "valid.tsv")[1:]
    assert len(train) + len(valid) == 40 and valid
    assert {line.split("\t")[0] for line in valid} == {
        f"d{i % 3}/c{i:02d}.wav" for i in range(40) if is_valid_clip(f"d{i % 3}/c{i:02d}.wav", 3, 0.3)
    }
    assert "d1/c04.wav\t104" in train + valid


def test_refuses_to_overwrite_without_force(collection, tmp_path):
    dest = tmp_path / "m"
    prepare_manifest(collection, dest, valid_fraction=0.0)
    before = (dest / "train.tsv").read_text()
    with pytest.raises(FileExistsError, match="train.tsv.*--force"):
        prepare_manifest(collection, dest, valid_fraction=0.0)
    (collection / "good_16k.wav").unlink()
    prepare_manifest(collection, dest, valid_fraction=0.0, force=True)
    assert (dest / "train.tsv").read_text() != before


def test_cli(collection, tmp_path, capsys):
    main = load_script("prepare_manifest").main
    dest = tmp_path / "m"
    args = [str(collection), "--dest", str(dest), "--valid-percent", "0.5", "--seed", "1", "--jobs", "2",
            "--ext", "wav,flac", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # the one-line summary
    assert f"{len(REJECTED) + len(KEPT)} audio files" in out and "rejected 4" in out
    train = read_lines(dest / "train.tsv")[1:]
    valid = read_lines(dest / "valid.tsv")[1:]
    assert sorted(line.split("\t")[0] for line in train + valid) == sorted(KEPT)
    assert {line.split("\t")[0] for line in valid} == {r for r in KEPT if is_valid_clip(r, 1, 0.5)}
    assert main(args) == 1 and "--force" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere"), "--dest", str(tmp_path / "m2")]) == 1
    assert capsys.readouterr().err == f"error: {os.path.realpath(tmp_path / 'nowhere')}: audio folder not found\n"
    assert main(args + ["--force", "--valid-percent", "5"]) == 2
    assert "fraction" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_on_a_terminal_only(monkeypatch):
    from sslam_plugin.data import parallel

    # stderr is a terminal: a tqdm bar on stderr, nothing on stdout
    terminal, stdout = _Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(sys, "stdout", stdout)
    assert list(parallel.progress(range(20), total=20, desc="reading headers")) == list(range(20))
    assert "reading headers" in terminal.getvalue() and "20/20" in terminal.getvalue()
    assert stdout.getvalue() == ""
    # --no-progress (enabled=False): no bar even on a terminal
    terminal.seek(0), terminal.truncate()
    assert parallel.parallel_map(abs, [-3, 4, -5, 6, -7], jobs=2, show_progress=False) == [3, 4, 5, 6, 7]
    assert terminal.getvalue() == ""
    # stderr redirected to a file or pipe: no bar, the output stays clean
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    assert parallel.parallel_map(abs, [-3, 4, -5, 6, -7], jobs=2, show_progress=True) == [3, 4, 5, 6, 7]
    assert piped.getvalue() == ""


def test_ogg_opus_and_oga_are_found_by_default_and_other_files_are_counted(tmp_path, caplog):
    """Files under their usual Ogg names are read by default; the rest are said, not silently left behind."""
    import numpy as np
    import soundfile as sf

    tone = (0.1 * np.sin(np.arange(16000) / 5)).astype("float32")
    sf.write(tmp_path / "bell.oga", tone, 16000, format="OGG", subtype="VORBIS")
    sf.write(tmp_path / "voice.opus", tone, 48000, format="OGG", subtype="OPUS")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "cover.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "more.jpg").write_bytes(b"\xff\xd8")
    with caplog.at_level("INFO"):
        assert find_audio_files(tmp_path) == ["bell.oga", "voice.opus"]
    assert "3 other files skipped (2 .jpg, 1 .txt)" in caplog.text
    assert [probe_header(str(tmp_path / name)).seconds for name in ("bell.oga", "voice.opus")] == [1.0, 1.0 / 3]
