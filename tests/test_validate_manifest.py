"""scripts/validate_manifest.py and sslam_plugin.data.validate on manifests with broken files."""

from __future__ import annotations

import pytest

from broken_audio import load_script, make_collection, write_manifest
from sslam_plugin.data.validate import validate_manifest

ENTRIES = {  # listed sample count (good.flac really has 8000)
    "good_16k.wav": 16000,
    "good.flac": 9000,
    "stereo.wav": 16000,
    "hi_44k.wav": 44100,
    "u8.wav": 16000,
    "nan.wav": 16000,
    "short.wav": 100,
    "corrupt.wav": 16000,
    "empty.wav": 16000,
    "zero.wav": 16000,
    "deleted_since.wav": 16000,
}
HEADER_ERRORS = {
    "short.wav": "too short: 100 samples, under one 25 ms analysis window",
    "corrupt.wav": "unreadable: Format not recognised.",
    "empty.wav": "empty file (0 bytes)",
    "zero.wav": "no samples: header says 0 frames",
    "deleted_since.wav": "missing",
}


@pytest.fixture
def manifest_path(tmp_path):
    root = tmp_path / "audio"
    make_collection(root)
    return write_manifest(tmp_path / "train.tsv", root, ENTRIES)


def line_of(rel: str) -> int:
    return list(ENTRIES).index(rel) + 2


def test_header_checks(manifest_path):
    report = validate_manifest(manifest_path)
    assert report.checked == report.clips == len(ENTRIES)
    assert {(p.line, p.path, p.reason) for p in report.errors} == {
        (line_of(rel), rel, reason) for rel, reason in HEADER_ERRORS.items()
    }
    assert [(p.path, p.reason) for p in report.warnings] == [
        ("good.flac", "length mismatch: the manifest says 9000 samples, the header 8000")
    ]
    # the readable headers: good_16k, good.flac, stereo, hi_44k, u8, nan, short
    assert report.sample_rates == {16000: 6, 44100: 1}
    assert report.channels == {1: 6, 2: 1}
    summary = report.summary()
    assert "5 errors" in summary and "1 warnings" in summary and "resampled to 16 kHz" in summary


def test_decode_finds_nan(manifest_path):
    report = validate_manifest(manifest_path, decode=True, jobs=2)
    assert ("nan.wav", "non-finite samples: contains NaN or Inf samples") in {(p.path, p.reason) for p in report.errors}
    assert len(report.errors) == len(HEADER_ERRORS) + 1


def test_max_clips_checks_an_even_subset(manifest_path):
    report = validate_manifest(manifest_path, max_clips=3)  # indices 0, 5, 10
    assert report.checked == 3
    assert [p.path for p in report.errors] == ["deleted_since.wav"]


def test_missing_root(tmp_path):
    report = validate_manifest(write_manifest(tmp_path / "t.tsv", tmp_path / "gone", {"a.wav": 5}))
    assert [p.reason for p in report.errors] == ["missing: the audio root does not exist"]
    assert report.checked == 0


def test_label_side_files(tmp_path):
    root = tmp_path / "audio"
    make_collection(root)
    path = write_manifest(tmp_path / "eval.tsv", root, {"good_16k.wav": 16000, "stereo.wav": 16000, "u8.wav": 16000})
    (tmp_path / "label_descriptors.csv").write_text("0,dog,Dog\n1,cat,Cat\n")
    (tmp_path / "eval.lbl").write_text("good_16k\tdog\nstereo\tdog,owl\n")
    (tmp_path / "eval_weights.csv").write_text("0.5\n0.5\n")
    reasons = [(p.path, p.reason) for p in validate_manifest(path).errors]
    assert reasons == [
        (str(tmp_path / "eval.lbl"), "unknown labels ['owl'] at line 2 (not in label_descriptors.csv)"),
        ("u8.wav", "no label line in eval.lbl"),
        (str(tmp_path / "eval_weights.csv"), "2 weights for 3 clips in eval.tsv"),
    ]


def test_cli_exit_status_and_report(manifest_path, tmp_path, capsys):
    main = load_script("validate_manifest").main
    report_path = tmp_path / "problems.tsv"
    assert main([str(manifest_path), "--jobs", "1", "--no-progress", "--report", str(report_path)]) == 1
    out = capsys.readouterr().out
    assert "5 errors" in out and "error: line 9: corrupt.wav: unreadable" in out
    rows = report_path.read_text().splitlines()
    # 5 errors, the length mismatch, and good.flac (0.5 s) under the recipes' 10000 samples (0.625 s)
    assert len(rows) == 7
    assert rows[0].startswith(f"{manifest_path}\t3\tgood.flac\twarning\tshorter than the minimum: 0.5 s")
    assert rows[1].startswith(f"{manifest_path}\t3\tgood.flac\twarning\tlength mismatch")
    clean = write_manifest(tmp_path / "clean.tsv", manifest_path.parent / "audio", {"good_16k.wav": 16000})
    assert main([str(clean), "--no-progress"]) == 0
    capsys.readouterr()
    assert main([str(tmp_path / "nope.tsv"), "--no-progress"]) == 1  # 2 is for usage errors
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope.tsv'}: manifest not found\n"
