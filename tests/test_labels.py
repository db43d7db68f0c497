import pytest

from sslam_plugin.data import labels_for_files, read_clip_labels, read_label_descriptors


def test_descriptors_and_clip_labels(tmp_path):
    (tmp_path / "label_descriptors.csv").write_text('0,/m/09x0r,Speech\n1,/m/04rlf,"Music, live"\n')
    labels = read_label_descriptors(tmp_path / "label_descriptors.csv")
    assert labels.ids == ["/m/09x0r", "/m/04rlf"] and labels.names == ["Speech", "Music, live"]
    (tmp_path / "train.lbl").write_text("a\t/m/09x0r\nb\t/m/04rlf,/m/09x0r\n")
    assert read_clip_labels(tmp_path / "train.lbl", labels) == {"a": [0], "b": [1, 0]}


def test_unknown_label_and_bad_line_name_the_line(tmp_path):
    (tmp_path / "d.csv").write_text("0,x,X\n")
    labels = read_label_descriptors(tmp_path / "d.csv")
    (tmp_path / "t.lbl").write_text("a\tx\nb\ty\n")
    with pytest.raises(ValueError, match=r"t.lbl:2: labels \['y'\]"):
        read_clip_labels(tmp_path / "t.lbl", labels)
    (tmp_path / "u.lbl").write_text("a x\n")
    with pytest.raises(ValueError, match="u.lbl:1: expected"):
        read_clip_labels(tmp_path / "u.lbl", labels)


def test_files_match_by_path_then_by_name():
    by_clip = {"yes/0a7c_nohash_0": [1], "no/0a7c_nohash_0": [2], "clip9": [0]}
    files = ["yes/0a7c_nohash_0.wav", "no/0a7c_nohash_0.wav", "audio/clip9.flac"]
    assert labels_for_files(files, by_clip, "x.lbl") == [[1], [2], [0]]
    with pytest.raises(ValueError, match=r"x.lbl: 1 clips have no labels \(first: 'other.wav'\)"):
        labels_for_files(["other.wav"], by_clip, "x.lbl")
