"""`sslam-prepare-labels` on strong labels (dcase, urbansed --strong, polyphonic), through the installed command.

Hand-written annotation files and short constant WAVs; every output line is checked against what
the annotations say, and bad lines must give one `error:` line naming file:line, exit 2 (the
command's status for bad input) and no output files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sslam_plugin.cli.prepare_labels import main as prepare_labels

COMMAND = str(Path(sys.executable).parent / "sslam-prepare-labels")


def _wav(path: Path, seconds: float, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.full(int(seconds * rate), 0.1, dtype=np.float32), rate)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, *args], capture_output=True, text=True, timeout=120)


def _lines(path: Path) -> list:
    return path.read_text().splitlines()


def _dcase_corpus(root: Path) -> None:
    for name, seconds in (("strong/a.wav", 4.0), ("strong/b.wav", 3.0), ("weak/w1.wav", 2.0), ("unl/u1.wav", 2.0),
                          ("eval/c.wav", 5.0)):
        _wav(root / "audio" / name, seconds)
    (root / "strong.tsv").write_text(
        "filename\tonset\toffset\tevent_label\n"
        "a.wav\t0.5\t1.5\tdog\n"
        "a.wav\t1.0\t4.2\tcat\n"  # 0.2 s past the 4 s clip: clipped to its end
        "b.wav\t\t\t\n"  # annotated, no events
    )
    (root / "weak.tsv").write_text("filename\tevent_labels\nw1.wav\tdog,cat\n")
    (root / "unlabelled.tsv").write_text("filename\nu1.wav\n")
    (root / "durations.tsv").write_text("filename\tduration\na.wav\t4.0\nb.wav\t3.0\n")
    (root / "eval.tsv").write_text("filename\tonset\toffset\tevent_label\nc.wav\t0.0\t2.25\tdog\n")


def test_dcase_strong_weak_unlabelled_into_one_detection_folder(tmp_path):
    _dcase_corpus(tmp_path)
    dest = tmp_path / "out"
    audio = tmp_path / "audio"
    result = _run(
        "dcase", "--dest", str(dest), "--jobs", "1", "--no-progress",
        "--strong", "train", str(tmp_path / "strong.tsv"), str(audio / "strong"),
        "--weak", "train", str(tmp_path / "weak.tsv"), str(audio / "weak"),
        "--unlabelled", "train", str(tmp_path / "unlabelled.tsv"), str(audio / "unl"),
        "--durations", "train", str(tmp_path / "durations.tsv"),
        "--strong", "eval", str(tmp_path / "eval.tsv"), str(audio / "eval"),
    )
    assert result.returncode == 0, result.stderr
    assert f"{dest / 'train_strong.tsv'}: 2 strongly labelled clips, 2 events" in result.stdout
    assert f"{dest / 'eval_strong.tsv'}: 1 strongly labelled clips, 1 events" in result.stdout
    assert _lines(dest / "label_descriptors.csv") == ["0,cat,cat", "1,dog,dog"]
    assert _lines(dest / "train_strong.tsv") == [
        "filename\tonset\toffset\tevent_label",
        "a\t0.500\t1.500\tdog", "a\t1.000\t4.000\tcat",
        "b\t\t\t",
    ]
    assert _lines(dest / "eval_strong.tsv")[1:] == ["c\t0.000\t2.250\tdog"]
    # the manifest holds every clip of the split (strong, weak, unlabelled), relative to the common root
    manifest = _lines(dest / "train.tsv")
    assert Path(manifest[0]) == audio.resolve()
    assert sorted(line.split("\t")[0] for line in manifest[1:]) == ["strong/a.wav", "strong/b.wav", "unl/u1.wav", "weak/w1.wav"]
    assert {line.split("\t")[0]: line.split("\t")[1] for line in manifest[1:]}["strong/a.wav"] == "64000"
    lbl = dict(line.split("\t") for line in _lines(dest / "train.lbl"))
    assert lbl["a"] == "cat,dog" and lbl["w1"] == "cat,dog" and lbl["b"] == "" and lbl["u1"] == ""

    # the folder reads back as a detection split: strong, weak and unlabelled clips told apart
    from sslam_plugin.data.labels import LabelSet
    from sslam_plugin.detection.data_folder import read_detection_split

    split = read_detection_split(dest, "train", LabelSet.from_ids(["cat", "dog"]))
    assert dict(zip(split["clip_ids"], split["kinds"])) == {"a": "strong", "b": "strong", "u1": "unlabelled", "w1": "weak"}


def test_dcase_bad_line_is_one_error_naming_file_and_line(tmp_path):
    _dcase_corpus(tmp_path)
    strong = tmp_path / "strong.tsv"
    strong.write_text("filename\tonset\toffset\tevent_label\na.wav\t0.5\t1.5\tdog\na.wav\t2.0\t1.0\tcat\n")
    dest = tmp_path / "out"
    args = ["dcase", "--dest", str(dest), "--jobs", "1", "--no-progress",
            "--strong", "train", str(strong), str(tmp_path / "audio" / "strong")]
    result = _run(*args)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: {strong}:3: offset 1 s is not after the onset 2 s"]
    assert not dest.exists()  # checked before anything is written


@pytest.mark.parametrize(
    "row, message",
    [
        ("a.wav\t4.5\t5.0\tdog", "strong.tsv:2: onset 4.5 s is outside the clip 'a' (0 to 4 s)"),
        ("a.wav\t0.5\tlate\tdog", "strong.tsv:2: offset 'late' is not a number of seconds"),
        ("b.wav\t0.1\t0.2\tfox", "strong.tsv:2: label 'fox' is not one of the 2 known labels"),
        ("zzz.wav\t0.1\t0.2\tdog", "strong.tsv: 1 listed clips have no audio file"),
    ],
)
def test_dcase_checks_in_process(tmp_path, capsys, row, message):
    _dcase_corpus(tmp_path)
    (tmp_path / "strong.tsv").write_text(f"filename\tonset\toffset\tevent_label\n{row}\n")
    (tmp_path / "labels.csv").write_text("0,cat,Cat\n1,dog,Dog\n")
    status = prepare_labels(["dcase", "--dest", str(tmp_path / "out"), "--jobs", "1", "--no-progress",
                             "--descriptors", str(tmp_path / "labels.csv"),
                             "--strong", "train", str(tmp_path / "strong.tsv"), str(tmp_path / "audio" / "strong")])
    err = capsys.readouterr().err
    assert status == 1 and len(err.splitlines()) == 1 and err.startswith("error: ") and message in err


def test_dcase_needs_strong_metadata(tmp_path, capsys):
    _dcase_corpus(tmp_path)
    status = prepare_labels(["dcase", "--dest", str(tmp_path / "out"), "--weak", "train", str(tmp_path / "weak.tsv"),
                             str(tmp_path / "audio" / "weak")])
    assert status == 2 and "give at least one --strong" in capsys.readouterr().err


def test_urbansed_strong_and_a_bad_annotation_line(tmp_path):
    root = tmp_path / "URBAN-SED"
    for split, clip, text in (
        ("train", "soundscape_train_0", "0.5\t2.0\tdog_bark\n1.0\t3.0\tsiren\n"),
        ("test", "soundscape_test_0", "0\t1.25\tsiren\n"),
    ):
        (root / "annotations" / split).mkdir(parents=True)
        (root / "annotations" / split / f"{clip}.txt").write_text(text)
        _wav(root / "audio" / split / f"{clip}.wav", 3.0)
    dest = tmp_path / "out"
    result = _run("urbansed", str(root), "--strong", "--dest", str(dest), "--jobs", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert _lines(dest / "train_strong.tsv")[1:] == ["soundscape_train_0\t0.500\t2.000\tdog_bark",
                                                     "soundscape_train_0\t1.000\t3.000\tsiren"]
    assert _lines(dest / "test_strong.tsv")[1:] == ["soundscape_test_0\t0.000\t1.250\tsiren"]
    assert _lines(dest / "train.lbl") == ["soundscape_train_0\tdog_bark,siren"]
    assert _lines(dest / "label_descriptors.csv") == ["0,dog_bark,dog bark", "1,siren,siren"]

    # an onset past the 3 s clip, line 2
    bad = root / "annotations" / "test" / "soundscape_test_0.txt"
    bad.write_text("0\t1.25\tsiren\n3.5\t3.9\tsiren\n")
    status = prepare_labels(["urbansed", str(root), "--strong", "--dest", str(tmp_path / "out2"), "--jobs", "1"])
    assert status == 1 and not (tmp_path / "out2").exists()


def test_polyphonic_folder_gets_strong_labels(tmp_path):
    poly = tmp_path / "poly"
    _wav(poly / "audio" / "eval" / "eval_00000.wav", 4.0)
    (poly / "eval.tsv").write_text(f"{poly / 'audio'}\neval/eval_00000.wav\t64000\n")
    (poly / "eval.lbl").write_text("eval_00000\tcat,dog\n")
    (poly / "label_descriptors.csv").write_text("0,dog,dog\n1,cat,cat\n")
    events = "scene\tsource\tlabel\tonset_s\toffset_s\tgain_db\n"
    (poly / "eval_events.tsv").write_text(
        events + "eval_00000\ta.wav\tdog\t0.5000\t2.5000\t-3.00\neval_00000\tb.wav\tcat\t3.0000\t4.0000\t0.00\n"
    )
    result = _run("polyphonic", str(poly))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{poly / 'eval_strong.tsv'}: 1 strongly labelled clips, 2 events"]
    assert _lines(poly / "eval_strong.tsv")[1:] == ["eval_00000\t0.500\t2.500\tdog", "eval_00000\t3.000\t4.000\tcat"]
    assert prepare_labels(["polyphonic", str(poly)]) == 1  # exists: --force needed
    (poly / "eval_events.tsv").write_text(events + "eval_00000\ta.wav\tdog\t2.5000\t2.0000\t-3.00\n")
    assert prepare_labels(["polyphonic", str(poly), "--force"]) == 1
