"""Label manifest converters on fixture metadata written in each dataset's documented layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from broken_audio import load_script, sine, write
from sslam_plugin.data import converters as lm

CLIP = sine(16000, 0.25)  # 4000 frames


def audio(root: Path, rel: str, frames: int = 4000) -> None:
    write(root / rel, CLIP[:frames], 16000)


def lines(path: Path) -> list:
    return path.read_text().splitlines()


def body(path: Path) -> list:
    """Manifest lines after the root line."""
    return lines(path)[1:]


# ---------------------------------------------------------------- AudioSet

CLASS_LABELS = """index,mid,display_name
0,/m/09x0r,"Speech"
1,/m/05zppz,"Male speech, man speaking"
2,/m/0jbk,"Animal"
"""

BALANCED = """# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/05zppz"
-0RWZT-miFs, 420.000, 430.000, "/m/0jbk"
abc_def-ghi, 10.000, 20.000, "/m/09x0r"
"""

UNBALANCED = """# Segments csv created Sun Mar  5 10:54:25 2017
# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4
# YTID, start_seconds, end_seconds, positive_labels
zzzzzzzzzz1, 0.000, 10.000, "/m/0jbk"
yyyyyyyyyy2, 0.000, 10.000, "/m/0jbk,/m/09x0r"
xxxxxxxxxx3, 0.000, 10.000, "/m/05zppz"
"""

EVAL = """# Segments csv created Sun Mar  5 10:54:25 2017
# num_ytids=2, num_segs=2, num_unique_labels=1, num_positive_labels=2
# YTID, start_seconds, end_seconds, positive_labels
aaaaaaaaaa4, 30.000, 40.000, "/m/09x0r"
bbbbbbbbbb5, 30.000, 40.000, "/m/09x0r"
"""


@pytest.fixture
def audioset_tree(tmp_path):
    meta = tmp_path / "meta"
    meta.mkdir()
    for name, text in [("class_labels_indices.csv", CLASS_LABELS), ("balanced_train_segments.csv", BALANCED),
                       ("unbalanced_train_segments.csv", UNBALANCED), ("eval_segments.csv", EVAL)]:
        (meta / name).write_text(text)
    root = tmp_path / "audio"
    audio(root, "--PJHxphWEs.wav")
    audio(root, "sub/Y-0RWZT-miFs.wav", 3000)  # PANNs-style Y prefix, in a sub-folder
    audio(root, "abc_def-ghi_10000_20000.wav")  # id_start_end naming, an id with _ and -
    audio(root, "zzzzzzzzzz1.wav")
    (root / "yyyyyyyyyy2.wav").write_bytes(b"broken download")
    audio(root, "Yaaaaaaaaaa4.wav")
    audio(root, "not_listed_x.wav")
    return tmp_path


def convert_audioset(tree: Path) -> dict:
    meta = tree / "meta"
    return lm.audioset(
        tree / "audio", meta / "class_labels_indices.csv", balanced=meta / "balanced_train_segments.csv",
        unbalanced=meta / "unbalanced_train_segments.csv", eval_segments=meta / "eval_segments.csv",
    )


def test_audioset_segments_parse_comments_and_quoted_labels(audioset_tree):
    rows = lm.read_audioset_segments(audioset_tree / "meta" / "balanced_train_segments.csv")
    assert rows == [("--PJHxphWEs", ("/m/09x0r", "/m/05zppz")), ("-0RWZT-miFs", ("/m/0jbk",)),
                    ("abc_def-ghi", ("/m/09x0r",))]


def test_audioset_manifests_labels_weights_and_missing(audioset_tree, tmp_path):
    dest = tmp_path / "out"
    reports = lm.write_label_manifests(convert_audioset(audioset_tree), dest)
    assert sorted(reports) == ["as20k", "as2m"]
    as20k, as2m = dest / "as20k", dest / "as2m"
    assert body(as20k / "train.tsv") == [
        "--PJHxphWEs.wav\t4000", "abc_def-ghi_10000_20000.wav\t4000", "sub/Y-0RWZT-miFs.wav\t3000"]
    assert lines(as20k / "train.lbl") == [
        "--PJHxphWEs\t/m/09x0r,/m/05zppz", "abc_def-ghi_10000_20000\t/m/09x0r", "Y-0RWZT-miFs\t/m/0jbk"]
    assert not (as20k / "train_weights.csv").exists()
    # AS-2M = balanced + unbalanced; the broken download is rejected, the undownloaded one missing
    assert [x.split("\t")[0] for x in body(as2m / "train.tsv")] == [
        "--PJHxphWEs.wav", "abc_def-ghi_10000_20000.wav", "sub/Y-0RWZT-miFs.wav", "zzzzzzzzzz1.wav"]
    # label counts in train: /m/09x0r 2, /m/05zppz 1, /m/0jbk 2
    assert [float(w) for w in lines(as2m / "train_weights.csv")] == [0.5 + 1.0, 0.5, 0.5, 0.5]
    for folder in (as20k, as2m):
        assert lines(folder / "eval.lbl") == ["Yaaaaaaaaaa4\t/m/09x0r"]
        assert lines(folder / "label_descriptors.csv") == [
            "0,/m/09x0r,Speech", '1,/m/05zppz,"Male speech, man speaking"', "2,/m/0jbk,Animal"]
    assert lines(as2m / "missing.tsv") == ["train\txxxxxxxxxx3", "eval\tbbbbbbbbbb5"]
    assert lines(as20k / "missing.tsv") == ["eval\tbbbbbbbbbb5"]
    assert body(as2m / "rejected.tsv") == ["yyyyyyyyyy2.wav\tunreadable: Format not recognised."]
    assert body(as20k / "rejected.tsv") == []
    report = reports["as2m"]
    assert report.listed == {"train": 6, "eval": 2}
    assert report.written == {"train": 4, "eval": 1}
    assert report.missing == {"train": 1, "eval": 1}
    assert "train 1, eval 1" in report.summary() and "unreadable 1" in report.summary()


def test_audioset_outputs_load_with_the_classification_reader(audioset_tree, tmp_path):
    from sslam_plugin.data import labels as labels_mod

    dest = tmp_path / "out"
    lm.write_label_manifests(convert_audioset(audioset_tree), dest)
    labels = labels_mod.read_label_descriptors(dest / "as2m" / "label_descriptors.csv")
    by_clip = labels_mod.read_clip_labels(dest / "as2m" / "train.lbl", labels)
    files = [x.split("\t")[0] for x in body(dest / "as2m" / "train.tsv")]
    assert [by_clip[labels_mod.clip_id(f)] for f in files] == [[0, 1], [0], [2], [2]]


def test_audioset_unknown_label_and_malformed_line(audioset_tree):
    meta = audioset_tree / "meta"
    (meta / "bad.csv").write_text(BALANCED.replace("/m/0jbk", "/m/unknown"))
    with pytest.raises(lm.LabelFormatError, match=r"bad.csv: segment -0RWZT-miFs has labels \['/m/unknown'\]"):
        lm.audioset(audioset_tree / "audio", meta / "class_labels_indices.csv", balanced=meta / "bad.csv")
    (meta / "short.csv").write_text(BALANCED.replace('430.000, "/m/0jbk"', "430.000"))
    with pytest.raises(lm.LabelFormatError, match="short.csv:5: expected 'YTID, start_seconds"):
        lm.read_audioset_segments(meta / "short.csv")


# ---------------------------------------------------------------- ESC-50

ESC50_CSV = """filename,fold,target,category,esc10,src_file,take
1-100032-A-0.wav,1,0,dog,True,100032,A
1-110389-A-0.wav,1,0,dog,True,110389,A
2-100648-A-40.wav,2,40,"helicopter",False,100648,A
3-1000-A-1.wav,3,1,rooster,False,1000,A
4-2000-B-40.wav,4,40,helicopter,False,2000,B
5-3000-A-1.wav,5,1,rooster,False,3000,A
"""


def test_esc50_one_folder_per_held_out_fold(tmp_path):
    root = tmp_path / "ESC-50-master"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text(ESC50_CSV)
    for name in ["1-100032-A-0.wav", "1-110389-A-0.wav", "2-100648-A-40.wav", "3-1000-A-1.wav", "5-3000-A-1.wav"]:
        audio(root / "audio", name)  # 4-2000-B-40.wav was never downloaded
    sets = lm.esc50(root)
    assert sorted(sets) == ["fold1", "fold2", "fold3", "fold4", "fold5"]
    dest = tmp_path / "out"
    reports = lm.write_label_manifests(sets, dest)
    assert lines(dest / "fold1" / "eval.lbl") == ["1-100032-A-0\tdog", "1-110389-A-0\tdog"]
    assert [x.split("\t")[0] for x in body(dest / "fold1" / "train.tsv")] == [
        "2-100648-A-40.wav", "3-1000-A-1.wav", "5-3000-A-1.wav"]
    assert lines(dest / "fold1" / "train.lbl") == ["2-100648-A-40\thelicopter", "3-1000-A-1\trooster",
                                                   "5-3000-A-1\trooster"]
    assert body(dest / "fold4" / "eval.tsv") == []
    assert body(dest / "fold4" / "rejected.tsv") == ["4-2000-B-40.wav\tmissing"]
    # indices follow the targets (0 dog, 1 rooster, 40 helicopter), numbered without gaps
    assert lines(dest / "fold3" / "label_descriptors.csv") == ["0,dog,dog", "1,rooster,rooster", "2,helicopter,helicopter"]
    assert reports["fold2"].written == {"train": 4, "eval": 1}


def test_esc50_inconsistent_target(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text(ESC50_CSV.replace("3-1000-A-1.wav,3,1,rooster", "3-1000-A-1.wav,3,1,cat"))
    with pytest.raises(lm.LabelFormatError, match=r"esc50.csv:7: target 1 is 'rooster' here but 'cat' earlier"):
        lm.esc50(tmp_path)


# ---------------------------------------------------------------- Speech Commands v2


def test_speech_commands_lists_and_background_noise(tmp_path):
    root = tmp_path / "speech_commands_v0.02"
    for rel in ["yes/a1_nohash_0.wav", "yes/b2_nohash_0.wav", "no/a1_nohash_0.wav", "no/c3_nohash_1.wav",
                "_background_noise_/white_noise.wav"]:
        audio(root, rel)
    (root / "validation_list.txt").write_text("no/a1_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/b2_nohash_0.wav\n\n")
    (root / "LICENSE").write_text("cc-by")
    dest = tmp_path / "out"
    lm.write_label_manifests({"": lm.speech_commands(root)}, dest)
    assert [x.split("\t")[0] for x in body(dest / "train.tsv")] == ["no/c3_nohash_1.wav", "yes/a1_nohash_0.wav"]
    # file names repeat across words, so clip ids keep the word folder
    assert lines(dest / "train.lbl") == ["no/c3_nohash_1\tno", "yes/a1_nohash_0\tyes"]
    assert lines(dest / "valid.lbl") == ["no/a1_nohash_0\tno"]
    assert lines(dest / "test.lbl") == ["yes/b2_nohash_0\tyes"]
    assert lines(dest / "label_descriptors.csv") == ["0,no,no", "1,yes,yes"]
    (root / "testing_list.txt").write_text("_background_noise_/white_noise.wav\n")
    with pytest.raises(lm.LabelFormatError, match="testing_list.txt:1: '_background_noise_/white_noise.wav'"):
        lm.speech_commands(root)


# ---------------------------------------------------------------- SPASS


def test_spass_matrix_and_list_layouts_and_75_percent_split(tmp_path):
    root = tmp_path / "SPASS"
    names = ["s0", "s1", "s2", "s3", "s4", "s5", "s10", "s11"]
    rows = "".join(f"{n}.wav;{int(i % 2 == 0)};{int(i % 3 == 0)};0\n" for i, n in enumerate(names))
    (root / "Park").mkdir(parents=True)
    (root / "Park" / "1_MatrixLabelsPark.csv").write_text("File;Bird;Car horn;Dog\n" + rows)
    for n in names:
        audio(root / "Park" / "audio", f"{n}.wav")
    # a second scene: list layout, label file apart from its audio (found by the scene's folder name)
    (root / "labels").mkdir()
    (root / "labels" / "2_MatrixLabelsMarket.csv").write_text(
        "filename,label1,label2\nm1.wav,Voices,Bird\nm2.wav,Bird,\nm3.wav,Voices,\nm4.wav,Cart,Bird\n")
    for n in ["m1", "m2", "m3", "m4"]:
        audio(root / "market_scene", f"{n}.wav")
    sets = lm.spass(root)
    assert sorted(sets) == ["market", "park"]
    dest = tmp_path / "out"
    lm.write_label_manifests(sets, dest)
    # sorted names: s0 s1 s10 s11 s2 s3 | s4 s5 (first int(8 * 0.75) = 6 train)
    assert [x.split("\t")[0] for x in body(dest / "park" / "train.tsv")] == [
        "audio/s0.wav", "audio/s1.wav", "audio/s10.wav", "audio/s11.wav", "audio/s2.wav", "audio/s3.wav"]
    # s0 (i=0): Bird, Car horn; s10 (i=6): Bird, Car horn; s1 (i=1): none; s3 (i=3): Car horn
    assert lines(dest / "park" / "train.lbl") == [
        "s0\tBird,Car horn", "s1\t", "s10\tBird,Car horn", "s11\t", "s2\tBird", "s3\tCar horn"]
    assert lines(dest / "park" / "eval.lbl") == ["s4\tBird", "s5\t"]
    assert lines(dest / "park" / "label_descriptors.csv") == ["0,Bird,Bird", "1,Car horn,Car horn", "2,Dog,Dog"]
    assert lines(dest / "market" / "train.lbl") == ["m1\tVoices,Bird", "m2\tBird", "m3\tVoices"]
    assert lines(dest / "market" / "eval.lbl") == ["m4\tCart,Bird"]
    assert lines(dest / "market" / "label_descriptors.csv") == ["0,Bird,Bird", "1,Cart,Cart", "2,Voices,Voices"]
    assert lines(dest / "market" / "train.tsv")[0] == str((root / "market_scene").resolve())


def test_spass_event_layout_of_the_release(tmp_path):
    # the released CSVs: one row per sound event, file in audio_filename, class in class
    root = tmp_path / "SPASS"
    (root / "SPASS_META_DATA").mkdir(parents=True)
    (root / "SPASS_META_DATA" / "1_MatrixLabelsMarket.csv").write_text(
        "audio_filename,class,onset,offset\n"
        "b.wav,Voices,0.0,1.0\nb.wav,Cart,2.0,3.0\na.wav,Voices,0.5,4.0\nb.wav,Voices,5.0,6.0\n"
        "d.wav,Bird,0.0,10.0\nc.wav,Cart,1.0,2.0\n"
    )
    for n in "abcd":
        audio(root / "Market_audio_files", f"{n}.wav")
    sets = lm.spass(root)
    dest = tmp_path / "out"
    lm.write_label_manifests(sets, dest)
    # sorted a b c | d; b lists Voices once though it has two Voices events
    assert lines(dest / "market" / "train.lbl") == ["a\tVoices", "b\tVoices,Cart", "c\tCart"]
    assert lines(dest / "market" / "eval.lbl") == ["d\tBird"]
    assert lines(dest / "market" / "label_descriptors.csv") == ["0,Bird,Bird", "1,Cart,Cart", "2,Voices,Voices"]
    assert lines(dest / "market" / "train.tsv")[0] == str((root / "Market_audio_files").resolve())


# ---------------------------------------------------------------- URBAN-SED


def test_urbansed_clip_level_labels(tmp_path):
    root = tmp_path / "URBAN-SED_v2.0.0"
    ann = root / "annotations"
    (ann / "train").mkdir(parents=True)
    (ann / "validate").mkdir()
    (ann / "train" / "soundscape_train_uniform0.txt").write_text(
        "0.000\t2.500\tdog_bark\n1.250\t3.400\tsiren\n5.000\t6.000\tdog_bark\n")
    (ann / "train" / "soundscape_train_bimodal1.txt").write_text("0.5 1.5 car_horn\n")
    (ann / "train" / "soundscape_train_uniform0.jams").write_text("{}")
    (ann / "validate" / "soundscape_validate_uniform7.txt").write_text("2.0\t9.5\tjackhammer\n")
    audio(root / "audio", "train/soundscape_train_uniform0.wav")
    audio(root / "audio", "train/soundscape_train_bimodal1.wav")  # validate clip's audio is missing
    dest = tmp_path / "out"
    report = lm.write_label_manifests({"": lm.urbansed(root)}, dest)[""]
    assert lines(dest / "train.lbl") == ["soundscape_train_bimodal1\tcar_horn", "soundscape_train_uniform0\tdog_bark,siren"]
    assert body(dest / "validate.tsv") == []
    assert body(dest / "rejected.tsv") == ["validate/soundscape_validate_uniform7.wav\tmissing"]
    assert lines(dest / "label_descriptors.csv") == [
        "0,car_horn,car horn", "1,dog_bark,dog bark", "2,jackhammer,jackhammer", "3,siren,siren"]
    assert report.written == {"train": 2, "validate": 0}
    (ann / "train" / "soundscape_train_bimodal1.txt").write_text("0.5\tsoon\tcar_horn\n")
    with pytest.raises(lm.LabelFormatError, match="soundscape_train_bimodal1.txt:1: onset/offset"):
        lm.urbansed(root)


# ---------------------------------------------------------------- generic CSV


def test_generic_csv_quoting_header_comments_and_separator(tmp_path):
    root = tmp_path / "clips"
    for rel in ["a/x.wav", "b/y.wav", "c/z.wav"]:
        audio(root, rel)
    (tmp_path / "train.csv").write_text(
        'path,labels\na/x.wav,"dog,cat"\n# a comment\nb/y.wav,bird\n./c/z.wav,dog,bird\n')
    (tmp_path / "eval.tsv").write_text("a/x.wav\tcat;dog\nmissing.wav\tdog\n")
    train = lm.generic_csv({"train": tmp_path / "train.csv"}, root)
    ev = lm.generic_csv({"eval": tmp_path / "eval.tsv"}, root, label_sep=";", delimiter="\t")
    dest = tmp_path / "out"
    lm.write_label_manifests({"train": train, "eval": ev}, dest)
    assert lines(dest / "train" / "train.lbl") == ["x\tdog,cat", "y\tbird", "z\tdog,bird"]
    assert lines(dest / "train" / "label_descriptors.csv") == ["0,bird,bird", "1,cat,cat", "2,dog,dog"]
    assert lines(dest / "eval" / "eval.lbl") == ["x\tcat,dog"]
    assert body(dest / "eval" / "rejected.tsv") == ["missing.wav\tmissing"]
    (tmp_path / "bad.csv").write_text("a/x.wav,dog\nb/y.wav,owl\n")
    with pytest.raises(lm.LabelFormatError, match="bad.csv:2: label 'owl' is not in"):
        lm.generic_csv({"train": tmp_path / "bad.csv"}, root, descriptors=dest / "train" / "label_descriptors.csv")


def test_writer_refuses_to_overwrite(tmp_path):
    root = tmp_path / "clips"
    audio(root, "x.wav")
    (tmp_path / "t.csv").write_text("x.wav,dog\n")
    labelled = {"": lm.generic_csv({"train": tmp_path / "t.csv"}, root)}
    lm.write_label_manifests(labelled, tmp_path / "out")
    with pytest.raises(FileExistsError, match="--force"):
        lm.write_label_manifests(labelled, tmp_path / "out")
    lm.write_label_manifests(labelled, tmp_path / "out", force=True)


def test_sampling_weights_by_hand():
    # a: 2 clips, b: 1 clip, c: 3 clips
    labels = [["a", "c"], ["a"], ["b", "c"], ["c"]]
    assert lm.sampling_weights(labels) == pytest.approx([1 / 2 + 1 / 3, 1 / 2, 1 + 1 / 3, 1 / 3])
    assert lm.sampling_weights([[]]) == [0.0]


def test_prepare_labels_cli(tmp_path, capsys):
    main = load_script("prepare_labels").main
    root = tmp_path / "ESC-50-master"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text(ESC50_CSV)
    for name in ["1-100032-A-0.wav", "1-110389-A-0.wav", "2-100648-A-40.wav", "3-1000-A-1.wav", "5-3000-A-1.wav"]:
        audio(root / "audio", name)
    args = ["esc50", str(root), "--dest", str(tmp_path / "out"), "--jobs", "1", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 5  # one summary line per fold
    assert "ESC-50 fold 4" in out and "missing 1" in out
    assert lines(tmp_path / "out" / "fold2" / "eval.lbl") == ["2-100648-A-40\thelicopter"]
    assert main(args) == 1 and "--force" in capsys.readouterr().err
    csv_args = ["csv", "--split", "train=" + str(tmp_path / "nope.csv"), "--audio-dir", str(root), "--dest", str(tmp_path / "c")]
    assert main(csv_args) == 1 and "nope.csv: file not found" in capsys.readouterr().err
