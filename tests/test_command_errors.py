"""Every command fails the same way (sslam_plugin.cli): one ``error:`` line on stderr naming the file or
option, no traceback; exit status 1 for a file problem (missing, unreadable or malformed input, a bad
checkpoint), 2 for a usage error (argparse's refusals, option values out of range or contradicting).

Each case calls the command's ``main`` in-process. The usage cases also name missing files: the options
are checked first, so a bad command line is reported as such before any file is opened.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def run_command(module: str, argv, tmp_path: Path) -> int:
    """``sslam_plugin.cli.<module>.main(argv)`` with ``T`` in the arguments standing for ``tmp_path``."""
    main = importlib.import_module(f"sslam_plugin.cli.{module}").main
    try:
        return main([re.sub(r"(^|=)T/", rf"\g<1>{tmp_path}/", a) for a in argv])
    except SystemExit as stop:  # argparse's own refusals
        return stop.code


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


MISSING_INPUT = [  # (module, arguments); the missing input is the argument starting with T/missing
    ("infer", ["T/missing.pt", "T/clip.wav"]),
    ("evaluate", ["T/missing.pt", "--data", "T/"]),
    ("convert_checkpoint", ["T/missing.pt", "T/out"]),
    ("extract_features", ["T/model.pt", "T/missing", "T/out"]),
    ("detect", ["T/missing.pt", "T/clip.wav"]),
    ("plot_detection", ["T/missing.wav", "--out", "T/x.png", "--predicted", "T/p.tsv"]),
    ("plot_training", ["T/missing"]),
    ("plot_mixture", ["T/missing.tsv", "-o", "T/x.png"]),
    ("make_polyphonic", ["T/missing.tsv", "--dest", "T/out"]),
    ("validate_manifest", ["T/missing.tsv"]),
    ("compute_norm_stats", ["T/missing.tsv"]),
    ("pack", ["T/missing.tsv", "T/out"]),
    ("prepare_labels", ["csv", "--split", "train=T/missing.csv", "--audio-dir", "T/", "--dest", "T/out"]),
    ("prepare_labels", ["urbansed", "T/missing", "--dest", "T/out"]),
    ("prepare_labels", ["dcase", "--strong", "train", "T/missing.tsv", "T/", "--dest", "T/out"]),
    ("prepare_manifest", ["T/missing", "--dest", "T/out"]),
    ("benchmark_pretraining", ["--golden", "T/missing", "--size", "tiny", "--steps", "1"]),  # checked before any step
    ("benchmark_data", ["--manifest", "T/missing.tsv", "--clips", "1"]),
]


@pytest.mark.parametrize("module, argv", MISSING_INPUT, ids=[f"{m}-{a[0]}" for m, a in MISSING_INPUT])
def test_a_missing_input_is_one_error_line_naming_it_and_status_1(module, argv, tmp_path, capsys):
    missing = next(a for a in argv if a.startswith("T/missing") or "=T/missing" in a)
    missing = str(tmp_path / missing.split("T/", 1)[1])
    assert run_command(module, argv, tmp_path) == 1
    assert missing in one_error_line(capsys.readouterr().err)


OWN_USAGE = [  # option values the command refuses itself: one "error:" line
    ("infer", ["T/missing.pt", "T/clip.wav", "--top-k", "0"]),
    ("evaluate", ["T/missing.pt", "--data", "T/", "--batch-size", "0"]),
    ("convert_checkpoint", ["T/missing.pt", "T/out", "--num-heads", "0"]),
    ("extract_features", ["T/missing.pt", "T/missing", "T/out", "--batch-size", "0"]),
    ("extract_features", ["T/missing.pt", "T/missing", "T/out", "--granularity", "all", "--long-clips", "windows"]),
    ("detect", ["T/missing.pt", "T/clip.wav", "--overlap", "1"]),
    ("detect", ["T/missing.pt", "T/clip.wav", "--threshold", "dog"]),
    ("plot_detection", ["T/missing.wav", "--out", "T/x.png", "--predicted", "T/p.tsv", "--median-filter", "-1"]),
    ("plot_training", ["T/missing", "T/missing2", "--labels", "one"]),
    ("plot_mixture", ["T/missing.tsv", "--clips", "1"]),
    ("plot_mixture", ["T/missing.tsv", "--window-frames", "10"]),
    ("make_polyphonic", ["T/missing.tsv", "--dest", "T/out", "--sources", "3", "2"]),
    ("make_polyphonic", ["T/missing.tsv", "--dest", "T/out", "--test-fraction", "1"]),
    ("validate_manifest", ["T/missing.tsv", "--max-clips", "0"]),
    ("prepare_labels", ["spass", "T/missing", "--dest", "T/out", "--train-fraction", "1.5"]),
    ("prepare_labels", ["audioset", "--audio-dir", "T/missing", "--dest", "T/out"]),
    ("prepare_labels", ["dcase", "--dest", "T/out"]),
    ("prepare_manifest", ["T/missing", "--dest", "T/out", "--valid-percent", "5"]),
    ("config_dir", ["--options", "nowhere"]),
]
ARGPARSE_USAGE = [  # refused by argparse (or parser.error): "usage: ..." then "PROG: error: ..."
    ("make_polyphonic", ["T/missing.tsv"]),
    ("compute_norm_stats", ["T/missing.tsv", "--max-clips", "0"]),
    ("pack", ["T/missing.tsv", "T/out", "--shard-size", "0"]),
    ("plot_detection", ["T/missing.wav", "--out", "T/x.png", "--predicted", "T/p.tsv", "--checkpoint", "T/c.pt"]),
    ("infer", ["T/missing.pt", "T/clip.wav", "--top-k", "many"]),
    ("benchmark_pretraining", ["--golden", "T/missing", "--stages", "3"]),
]


@pytest.mark.parametrize("module, argv", OWN_USAGE, ids=[f"{m}-{'-'.join(a[-2:])}" for m, a in OWN_USAGE])
def test_a_bad_option_value_is_one_error_line_and_status_2(module, argv, tmp_path, capsys):
    assert run_command(module, argv, tmp_path) == 2
    one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("module, argv", ARGPARSE_USAGE, ids=[f"{m}-{a[-1]}" for m, a in ARGPARSE_USAGE])
def test_a_command_line_argparse_refuses_is_status_2(module, argv, tmp_path, capsys):
    assert run_command(module, argv, tmp_path) == 2
    err = capsys.readouterr().err
    assert ": error: " in err.splitlines()[-1] and "Traceback" not in err


def test_an_unknown_benchmark_is_status_2(capsys):
    from sslam_plugin.cli.benchmark import main

    assert main(["nowhere"]) == 2 and capsys.readouterr().err.startswith("usage: sslam-benchmark")


# --------------------------------------------------------------- bad content of a readable input
def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    """Malformed inputs: a manifest with a non-number length, labels, annotations, a checkpoint, a log."""
    sf.write(tmp_path / "clip.wav", np.zeros(16000, dtype=np.float32), 16000)
    write(tmp_path / "bad.tsv", f"{tmp_path}\nclip.wav\tmany\n")
    write(tmp_path / "bad.lbl", "clip\tdog\n")
    write(tmp_path / "label_descriptors.csv", "index,mid,display_name\n0,dog,dog\n")
    write(tmp_path / "labels.csv", "path,labels\nclip.wav,dog\nclip.wav,cat\n")  # listed twice
    write(tmp_path / "strong.tsv", "filename\tonset\toffset\tevent_label\nclip.wav\t0.8\t0.2\tdog\n")  # ends first
    write(tmp_path / "detections.tsv", "filename\tonset\toffset\tevent_label\nclip.wav\t0.2\tdog\n")  # no offset
    write(tmp_path / "urbansed" / "annotations" / "train" / "scene.txt", "0.5\tdog\n")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    write(tmp_path / "run" / "hydra_train.log", "[2026-01-01][fairseq_cli.train][INFO] - started\n")
    return tmp_path


BAD_CONTENT = [  # (module, arguments, the file the error names)
    ("validate_manifest", ["T/bad.tsv"], "bad.tsv"),
    ("compute_norm_stats", ["T/bad.tsv"], "bad.tsv"),
    ("pack", ["T/bad.tsv", "T/out"], "bad.tsv"),
    ("plot_mixture", ["T/bad.tsv", "-o", "T/x.png"], "bad.tsv"),
    ("make_polyphonic", ["T/bad.tsv", "--dest", "T/out"], "bad.tsv"),
    ("extract_features", ["T/garbage.pt", "T/bad.tsv", "T/out"], "bad.tsv"),
    ("prepare_labels", ["csv", "--split", "train=T/labels.csv", "--audio-dir", "T/", "--dest", "T/out"], "labels.csv:3"),
    ("prepare_labels", ["dcase", "--strong", "train", "T/strong.tsv", "T/", "--dest", "T/out"], "strong.tsv"),
    ("prepare_labels", ["urbansed", "T/urbansed", "--dest", "T/out"], "scene.txt:1"),
    ("plot_detection", ["T/clip.wav", "--out", "T/x.png", "--predicted", "T/detections.tsv"], "detections.tsv:2"),
    ("infer", ["T/garbage.pt", "T/clip.wav"], "garbage.pt"),
    ("evaluate", ["T/garbage.pt", "--data", "T/"], "garbage.pt"),
    ("convert_checkpoint", ["T/garbage.pt", "T/out"], "garbage.pt"),
    ("detect", ["T/garbage.pt", "T/clip.wav"], "garbage.pt"),
    ("plot_training", ["T/run"], "hydra_train.log"),
]


@pytest.mark.parametrize("module, argv, named", BAD_CONTENT, ids=[f"{m}-{n}" for m, _, n in BAD_CONTENT])
def test_a_malformed_input_is_one_error_line_naming_it_and_status_1(module, argv, named, bad, capsys):
    assert run_command(module, argv, bad) == 1
    assert named in one_error_line(capsys.readouterr().err)


def test_an_output_in_the_way_is_status_1(tmp_path, capsys):
    """convert refuses an existing OUT without --overwrite (alias --force) before reading IN."""
    (tmp_path / "out").mkdir()
    assert run_command("convert_checkpoint", ["T/missing.pt", "T/out"], tmp_path) == 1
    assert str(tmp_path / "out") in one_error_line(capsys.readouterr().err)
    assert run_command("convert_checkpoint", ["T/missing.pt", "T/out", "--force"], tmp_path) == 1
    assert "missing.pt" in one_error_line(capsys.readouterr().err)  # past the output check: the input is missing
