"""Strong labels: readers of the field's formats on hand-written files, checks, the detection data folder."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sslam_plugin.data.labels import LabelSet
from sslam_plugin.detection.data_folder import (
    DcaseSource,
    add_polyphony_strong_labels,
    dcase_dataset,
    read_detection_split,
    urbansed_dataset,
    write_strong_dataset,
)
from sslam_plugin.detection.strong_labels import (
    Event,
    StrongLabelError,
    check_events,
    merge_overlaps,
    read_dcase_strong,
    read_dcase_weak,
    read_polyphony_events,
    read_unlabelled,
    read_urbansed_folder,
)


def _wav(path, seconds, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.full(int(seconds * rate), 0.1, dtype=np.float32), rate)


def test_dcase_strong_weak_unlabelled_readers(tmp_path):
    strong = tmp_path / "strong.tsv"
    strong.write_text(
        "filename\tonset\toffset\tevent_label\n"
        "a.wav\t0.5\t2.25\tDog\n"
        "a.wav\t1.0\t3.0\tSpeech\n"
        "b.wav\t\t\t\n"  # annotated, no events
        "c.wav\t7.0\t9.5\tDog\n"
    )
    labels = read_dcase_strong(strong)
    assert labels.events == {
        "a": [Event("a", 0.5, 2.25, "Dog"), Event("a", 1.0, 3.0, "Speech")],
        "b": [],
        "c": [Event("c", 7.0, 9.5, "Dog")],
    }
    assert labels.events["c"][0].where == f"{strong}:5"
    weak = tmp_path / "weak.tsv"
    weak.write_text("filename\tevent_labels\nd.wav\tSpeech,Dog\ne.wav\tCat\n")
    assert read_dcase_weak(weak).weak == {"d": ("Dog", "Speech"), "e": ("Cat",)}
    unlabelled = tmp_path / "unlabel.tsv"
    unlabelled.write_text("filename\nf.wav\ng.wav\n")
    assert read_unlabelled(unlabelled).unlabelled == ["f", "g"]


@pytest.mark.parametrize("row, message", [
    ("a.wav\tzero\t1.0\tDog", "strong.tsv:2: onset 'zero' is not a number of seconds"),
    ("a.wav\t0.5\t1.0", "strong.tsv:2: expected 'filename<TAB>onset<TAB>offset<TAB>event_label'"),
])
def test_dcase_strong_format_errors_name_file_and_line(tmp_path, row, message):
    path = tmp_path / "strong.tsv"
    path.write_text("filename\tonset\toffset\tevent_label\n" + row + "\n")
    with pytest.raises(StrongLabelError, match=message):
        read_dcase_strong(path)


def test_wrong_header_is_refused(tmp_path):
    path = tmp_path / "strong.tsv"
    path.write_text("file\tstart\tend\tlabel\na.wav\t0\t1\tDog\n")
    with pytest.raises(StrongLabelError, match="strong.tsv:1: expected the header"):
        read_dcase_strong(path)


def test_urbansed_annotation_files(tmp_path):
    folder = tmp_path / "annotations" / "train"
    folder.mkdir(parents=True)
    (folder / "soundscape_0.txt").write_text("0.000\t2.500\tdog_bark\n4.25\t6.0\tsiren\n")
    (folder / "soundscape_1.txt").write_text("")
    labels = read_urbansed_folder(folder)
    assert labels.events == {
        "soundscape_0": [Event("soundscape_0", 0.0, 2.5, "dog_bark"), Event("soundscape_0", 4.25, 6.0, "siren")],
        "soundscape_1": [],
    }


def test_polyphony_events_give_one_event_per_label(tmp_path):
    path = tmp_path / "eval_events.tsv"
    path.write_text(
        "scene\tsource\tlabel\tonset_s\toffset_s\tgain_db\n"
        "eval_00000\tx/a.wav\tdog\t0.5000\t2.5000\t-3.00\n"
        "eval_00000\tx/b.wav\tcat,bird\t1.0000\t3.0000\t0.00\n"
    )
    labels = read_polyphony_events(path)
    assert labels.events["eval_00000"] == [
        Event("eval_00000", 0.5, 2.5, "dog"), Event("eval_00000", 1.0, 3.0, "cat"), Event("eval_00000", 1.0, 3.0, "bird"),
    ]
    assert labels.events["eval_00000"][2].where == f"{path}:3"


@pytest.mark.parametrize("onset, offset, label, message", [
    (10.5, 11.0, "Dog", r"strong.tsv:2: onset 10.5 s is outside the clip 'a' \(0 to 10 s\)"),
    (-0.1, 1.0, "Dog", r"strong.tsv:2: onset -0.1 s is outside the clip"),
    (2.0, 2.0, "Dog", r"strong.tsv:2: offset 2 s is not after the onset 2 s"),
    (1.0, 2.0, "Unicorn", r"strong.tsv:2: label 'Unicorn' is not one of the 2 known labels"),
    (9.0, 11.0, "Dog", r"strong.tsv:2: offset 11 s is past the end of clip 'a' \(10 s\)"),
])
def test_checks_name_the_line(tmp_path, onset, offset, label, message):
    path = tmp_path / "strong.tsv"
    path.write_text(f"filename\tonset\toffset\tevent_label\na.wav\t{onset}\t{offset}\t{label}\n")
    with pytest.raises(StrongLabelError, match=message):
        check_events(read_dcase_strong(path), ["Dog", "Speech"], {"a": 10.0})


def test_offsets_just_past_the_end_are_clipped():
    from sslam_plugin.detection.strong_labels import StrongLabels

    labels = StrongLabels(events={"a": [Event("a", 9.0, 10.02, "Dog")]})
    assert check_events(labels, ["Dog"], {"a": 10.0}).events["a"] == [Event("a", 9.0, 10.0, "Dog")]


def test_merge_overlaps_joins_touching_events_of_one_label_only():
    events = [Event("a", 0, 1, "x"), Event("a", 1, 2, "x"), Event("a", 0.5, 3, "y"), Event("a", 4, 5, "x")]
    assert merge_overlaps(events) == [Event("a", 0, 2, "x"), Event("a", 0.5, 3, "y"), Event("a", 4, 5, "x")]


def test_dcase_dataset_writes_a_detection_folder(tmp_path):
    for name, seconds in (("s1", 10.0), ("s2", 10.0)):
        _wav(tmp_path / "audio" / "synth" / f"{name}.wav", seconds)
    for name in ("w1", "u1"):
        _wav(tmp_path / "audio" / "weak" / f"{name}.wav", 10.0)
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "strong.tsv").write_text(
        "filename\tonset\toffset\tevent_label\ns1.wav\t1.0\t2.0\tDog\ns1.wav\t3.0\t10.01\tCat\ns2.wav\t\t\t\n"
    )
    (meta / "weak.tsv").write_text("filename\tevent_labels\nw1.wav\tCat\n")
    (meta / "unlabel.tsv").write_text("filename\nu1.wav\n")
    sources = {"train": [
        DcaseSource("strong", meta / "strong.tsv", tmp_path / "audio" / "synth"),
        DcaseSource("weak", meta / "weak.tsv", tmp_path / "audio" / "weak"),
        DcaseSource("unlabelled", meta / "unlabel.tsv", tmp_path / "audio" / "weak"),
    ]}
    dataset = dcase_dataset(sources)
    assert [d.id for d in dataset.labelled.descriptors] == ["Cat", "Dog"]
    dest = tmp_path / "out"
    write_strong_dataset(dataset, dest)
    assert (dest / "train_strong.tsv").read_text() == (
        "filename\tonset\toffset\tevent_label\ns1\t1.000\t2.000\tDog\ns1\t3.000\t10.000\tCat\ns2\t\t\t\n"
    )
    split = read_detection_split(dest, "train", LabelSet.from_ids(["Cat", "Dog"]))
    kinds = dict(zip(split["clip_ids"], split["kinds"]))
    assert kinds == {"s1": "strong", "s2": "strong", "w1": "weak", "u1": "unlabelled"}
    assert split["weak"][split["clip_ids"].index("w1")] == ["Cat"]

    # an onset past the clip's end (read from its audio header) is refused before writing
    (meta / "strong.tsv").write_text("filename\tonset\toffset\tevent_label\ns1.wav\t10.5\t11.0\tDog\n")
    with pytest.raises(StrongLabelError, match=r"strong.tsv:2: onset 10.5 s is outside the clip 's1' \(0 to 10 s\)"):
        dcase_dataset({"train": [DcaseSource("strong", meta / "strong.tsv", tmp_path / "audio" / "synth")]})


def test_listed_clip_without_audio_is_named(tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "strong.tsv").write_text("filename\tonset\toffset\tevent_label\nmissing.wav\t0\t1\tDog\n")
    with pytest.raises(StrongLabelError, match="1 listed clips have no audio file .* 'missing'"):
        dcase_dataset({"train": [DcaseSource("strong", tmp_path / "strong.tsv", tmp_path / "audio")]})


def test_urbansed_dataset_and_polyphony_folder(tmp_path):
    root = tmp_path / "URBAN-SED"
    (root / "annotations" / "test").mkdir(parents=True)
    (root / "annotations" / "test" / "soundscape_test_0.txt").write_text("0.5\t2.0\tdog_bark\n1.0\t9.99\tsiren\n")
    _wav(root / "audio" / "test" / "soundscape_test_0.wav", 10.0)
    dataset = urbansed_dataset(root)
    assert dataset.strong["test"].events["soundscape_test_0"][1] == Event("soundscape_test_0", 1.0, 9.99, "siren")
    assert dataset.strong["test"].durations["soundscape_test_0"] == pytest.approx(10.0)

    poly = tmp_path / "poly"
    _wav(poly / "audio" / "eval" / "eval_00000.wav", 4.0)
    (poly / "eval.tsv").write_text("audio\neval/eval_00000.wav\t64000\n")
    (poly / "eval.lbl").write_text("eval_00000\tdog,cat\n")
    (poly / "label_descriptors.csv").write_text("0,dog,dog\n1,cat,cat\n")
    (poly / "eval_events.tsv").write_text(
        "scene\tsource\tlabel\tonset_s\toffset_s\tgain_db\neval_00000\ta.wav\tdog\t0.5000\t2.5000\t-3.00\n"
        "eval_00000\tb.wav\tcat\t3.0000\t4.0000\t0.00\n"
    )
    assert add_polyphony_strong_labels(poly) == [poly / "eval_strong.tsv"]
    assert (poly / "eval_strong.tsv").read_text().splitlines()[1:] == [
        "eval_00000\t0.500\t2.500\tdog", "eval_00000\t3.000\t4.000\tcat",
    ]
    (poly / "eval_events.tsv").write_text(
        "scene\tsource\tlabel\tonset_s\toffset_s\tgain_db\neval_00000\ta.wav\tfox\t0.5000\t2.5000\t-3.00\n"
    )
    with pytest.raises(StrongLabelError, match=r"eval_events.tsv:2: label 'fox' is not one of the 2 known labels"):
        add_polyphony_strong_labels(poly, force=True)
