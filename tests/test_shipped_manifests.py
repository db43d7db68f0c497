"""The files in manifests/: they parse with the project's readers, match the converters, and stay current."""

from __future__ import annotations

import csv
import filecmp
import fnmatch
import os
import shutil
import sys
import tomllib
from pathlib import Path

import numpy as np
import soundfile as sf

from conftest import REPO, run
from sslam_plugin.cli import prepare_labels
from sslam_plugin.data import converters
from sslam_plugin.data.converters.audioset import AUDIOSET_CLASS_LABELS
from sslam_plugin.data.labels import read_clip_labels, read_label_descriptors
from sslam_plugin.data.manifest import read_manifest

MANIFESTS = REPO / "manifests"


def test_audioset_class_list_has_527_unique_classes_and_is_the_packaged_copy():
    shipped = MANIFESTS / "audioset" / "class_labels_indices.csv"
    assert shipped.resolve() == AUDIOSET_CLASS_LABELS.resolve()  # one file: manifests/ links to the package's
    labels = read_label_descriptors(shipped)
    assert len(labels) == 527
    assert len(set(labels.ids)) == 527 and len(set(labels.names)) == 527
    assert all(mid.startswith(("/m/", "/t/", "/g/")) for mid in labels.ids)
    assert (labels.ids[0], labels.names[0]) == ("/m/09x0r", "Speech")
    assert (labels.ids[137], labels.names[137]) == ("/m/04rlf", "Music")
    assert labels.names[1] == "Male speech, man speaking"  # a quoted name with a comma
    assert len(converters.read_descriptor_rows(shipped)) == 527  # the converters' reader too


def test_packaged_data_globs_cover_the_class_list():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    relative = AUDIOSET_CLASS_LABELS.relative_to(REPO / "sslam_plugin").as_posix()
    assert any(fnmatch.fnmatch(relative, p) for p in patterns["sslam_plugin"]), relative


def test_prepare_labels_audioset_defaults_to_the_shipped_class_list(tmp_path, capsys):
    audio = tmp_path / "audio"
    audio.mkdir()
    for ytid in ("--4gqARaEJE", "--BfvyPmVMo", "-0SdAVK79lg"):
        sf.write(audio / f"Y{ytid}.wav", np.zeros(16000, dtype=np.float32), 16000)
    (tmp_path / "balanced.csv").write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        '--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_,/m/0bt9lr,/m/0jbk"\n'
        '--BfvyPmVMo, 20.000, 30.000, "/m/03l9g"\n'
    )
    (tmp_path / "eval.csv").write_text('-0SdAVK79lg, 30.000, 40.000, "/m/04rlf"\n')
    dest = tmp_path / "out"
    status = prepare_labels.main([
        "audioset", "--audio-dir", str(audio), "--balanced", str(tmp_path / "balanced.csv"),
        "--eval", str(tmp_path / "eval.csv"), "--dest", str(dest), "--jobs", "1", "--no-progress",
    ])
    assert status == 0, capsys.readouterr().err
    labels = read_label_descriptors(dest / "as20k" / "label_descriptors.csv")
    assert labels.ids == read_label_descriptors(AUDIOSET_CLASS_LABELS).ids
    by_clip = read_clip_labels(dest / "as20k" / "train.lbl", labels)
    index = labels.index()
    assert by_clip["Y--BfvyPmVMo"] == [index["/m/03l9g"]]  # Hammer
    assert sorted(by_clip["Y--4gqARaEJE"]) == sorted(index[m] for m in ("/m/068hy", "/m/07q6cd_", "/m/0bt9lr", "/m/0jbk"))


def test_esc50_classes_are_what_the_converter_writes(tmp_path):
    shipped = read_label_descriptors(MANIFESTS / "esc50" / "label_descriptors.csv")
    assert len(shipped) == 50 and len(set(shipped.ids)) == 50
    assert (shipped.ids[0], shipped.ids[13], shipped.ids[49]) == ("dog", "crickets", "hand_saw")
    # an esc50.csv with one clip per (target, category) pair, listed out of order over five folds
    root = tmp_path / "ESC-50"
    (root / "meta").mkdir(parents=True)
    rows = [[f"{1 + t % 5}-{1000 + t}-A-{t}.wav", 1 + t % 5, t, c, False, 1000 + t, "A"]
            for t, c in reversed(list(enumerate(shipped.ids)))]
    with (root / "meta" / "esc50.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["filename", "fold", "target", "category", "esc10", "src_file", "take"], *rows])
    sets = converters.esc50(root)
    assert [(d.index, d.id, d.name) for d in sets["fold1"].descriptors] == [(d.index, d.id, d.name) for d in shipped]


def test_speech_commands_words_are_what_the_converter_writes(tmp_path):
    shipped = read_label_descriptors(MANIFESTS / "spcv2" / "label_descriptors.csv")
    assert len(shipped) == 35 and len(set(shipped.ids)) == 35
    for word in reversed(shipped.ids):
        (tmp_path / word).mkdir()
        (tmp_path / word / "a_nohash_0.wav").touch()
    (tmp_path / "_background_noise_").mkdir()
    (tmp_path / "validation_list.txt").write_text("yes/a_nohash_0.wav\n")
    (tmp_path / "testing_list.txt").write_text("no/a_nohash_0.wav\n")
    splits = converters.speech_commands(tmp_path)
    assert [(d.index, d.id, d.name) for d in splits.descriptors] == [(d.index, d.id, d.name) for d in shipped]


DEMO_ROOT = "../../demo_data/audio"  # from manifests/demo/ to where `make demo-data` writes the audio
UPDATE_ENV = "SSLAM_UPDATE_SHIPPED_MANIFESTS"


def test_demo_manifests_are_what_make_demo_data_writes(tmp_path):
    """The shipped copy equals a fresh corpus's manifests; only the root line differs.

    After a change to scripts/make_demo_data.py, refresh the copy with
    ``SSLAM_UPDATE_SHIPPED_MANIFESTS=1 pytest tests/test_shipped_manifests.py``.
    """
    result = run([sys.executable, str(REPO / "scripts" / "make_demo_data.py"), str(tmp_path / "demo")])
    assert result.returncode == 0, result.stderr
    fresh = tmp_path / "demo" / "manifests"
    shipped = MANIFESTS / "demo"
    if os.environ.get(UPDATE_ENV) == "1":
        shutil.rmtree(shipped, ignore_errors=True)
        shipped.mkdir(parents=True)
        for path in fresh.iterdir():
            data = path.read_bytes()  # bytes: label_descriptors.csv has csv's \r\n line ends
            if path.suffix == ".tsv":
                data = DEMO_ROOT.encode() + b"\n" + data.split(b"\n", 1)[1]
            (shipped / path.name).write_bytes(data)
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in shipped.iterdir())
    refresh = f"differs from a fresh demo corpus's: refresh with {UPDATE_ENV}=1 pytest tests/test_shipped_manifests.py"
    for name in names:
        if name.endswith(".tsv"):
            fresh_lines = (fresh / name).read_text().splitlines()
            shipped_lines = (shipped / name).read_text().splitlines()
            assert shipped_lines[1:] == fresh_lines[1:], f"{name} {refresh}"
            # where `make demo-data` puts the audio: demo_data/ at the top of the checkout
            assert shipped_lines[0] == DEMO_ROOT
            assert read_manifest(shipped / name).root == REPO / "demo_data" / "audio"
            assert read_manifest(fresh / name).root == tmp_path / "demo" / "audio"
        else:
            assert filecmp.cmp(fresh / name, shipped / name, shallow=False), f"{name} {refresh}"
    labels = read_label_descriptors(shipped / "label_descriptors.csv")
    assert len(labels) == 10
    train = read_manifest(shipped / "train.tsv")
    by_clip = read_clip_labels(shipped / "train.lbl", labels)
    assert len(train) == 480 and len(by_clip) == 480
    assert all(by_clip[Path(f).stem] for f in train.files)


def test_readme_names_the_source_of_every_shipped_file():
    readme = (MANIFESTS / "README.md").read_text()
    for path in MANIFESTS.rglob("*"):
        if path.is_file() and path.name != "README.md" and path.parent.name != "demo":
            assert path.relative_to(MANIFESTS).as_posix() in readme, path
    assert "demo/" in readme
