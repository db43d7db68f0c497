from pathlib import Path

import pytest

from sslam_plugin.data import ManifestError, read_manifest


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_absolute_root(tmp_path):
    m = read_manifest(write(tmp_path / "train.tsv", f"{tmp_path}/audio\na/x.wav\t16000\nb/y.flac\t32000\n"))
    assert m.root == tmp_path / "audio"
    assert m.files == ["a/x.wav", "b/y.flac"]
    assert m.num_samples.tolist() == [16000, 32000]
    assert m.full_path(1) == tmp_path / "audio" / "b" / "y.flac"


def test_relative_root_resolves_against_manifest_folder(tmp_path):
    (tmp_path / "manifests").mkdir()
    m = read_manifest(write(tmp_path / "manifests" / "train.tsv", "../audio\nx.wav\t20000\n"))
    assert m.root == (tmp_path / "audio").resolve()


def test_min_samples_filters_short_clips(tmp_path):
    m = read_manifest(write(tmp_path / "t.tsv", "/r\nshort.wav\t9999\nlong.wav\t10000\n"), min_samples=10000)
    assert m.files == ["long.wav"]


def test_blank_lines_are_ignored(tmp_path):
    m = read_manifest(write(tmp_path / "t.tsv", "/r\nx.wav\t5\n\n"))
    assert len(m) == 1


@pytest.mark.parametrize(
    "body, message",
    [
        ("/r\nx.wav 16000\n", "t.tsv:2: expected 'relative/path<TAB>num_samples'"),
        ("/r\nx.wav\tmany\n", "t.tsv:2: sample count 'many' is not an integer"),
        ("/r\nx.wav\t1\ny.wav\t-3\n", "t.tsv:3: negative sample count"),
        ("", "empty manifest"),
    ],
)
def test_malformed_manifest_names_file_and_line(tmp_path, body, message):
    with pytest.raises(ManifestError, match=message):
        read_manifest(write(tmp_path / "t.tsv", body))


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "nope.tsv")
