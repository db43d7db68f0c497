"""Manifests held as packed arrays: the same items as the line-by-line parse, and nothing copied per worker."""

import gc
import os
import random
from pathlib import Path

import numpy as np
import pytest

from sslam_plugin.data.labels import labels_for_files
from sslam_plugin.data.manifest import Manifest, ManifestError, _parse_lines, rates_path, read_manifest, read_rate_table
from sslam_plugin.data.row_tables import IntListTable, StringTable, match_rows, row_hashes
from sslam_plugin.data.tsv_columns import parse_name_int_lines

NAMES = ["a/x.wav", "", "b/ünï cødé/ß.flac", "日本語/音.wav", "archive.zip:1024:5000", "part.h5/Y0a1b2c3", "sp ace\t?"[:7]]


def test_string_table_reads_as_the_list_it_packs():
    table = StringTable.from_strings(NAMES)
    assert len(table) == len(NAMES) and list(table) == NAMES and table == NAMES
    assert [table[i] for i in range(-len(NAMES), len(NAMES))] == NAMES + NAMES
    assert table[2:5] == NAMES[2:5] and table[::-2] == NAMES[::-2]
    assert table.take([4, 0, 4]) == [NAMES[4], NAMES[0], NAMES[4]]
    assert table[np.array([True, False] * 3 + [True])] == NAMES[::2]
    assert "日本語/音.wav" in table and "日本語" not in table
    assert table != NAMES[:-1] and table != NAMES[:-1] + ["other"]
    assert StringTable.concat([table[:2], table[5:]]) == NAMES[:2] + NAMES[5:]
    with pytest.raises(IndexError):
        table[len(NAMES)]
    empty = StringTable()
    assert len(empty) == 0 and list(empty) == [] and empty == []
    # a name that is not UTF-8 (os.fsdecode's surrogates) goes in and out unchanged
    odd = os.fsdecode(b"caf\xe9.wav")
    assert StringTable.from_strings([odd])[0] == odd


def test_rows_far_apart_are_read_one_by_one(monkeypatch):
    from sslam_plugin.data import row_tables

    monkeypatch.setattr(row_tables, "_CHUNK", 4)  # rows spread wider than this are not copied as one block
    table = StringTable.from_strings(NAMES).take([5, 0, 2, 2])
    assert list(table) == [NAMES[5], NAMES[0], NAMES[2], NAMES[2]]


def test_int_list_table_reads_as_the_lists_it_packs():
    rows = [[3, 1], [], [0], [2, 2, 7]]
    table = IntListTable.from_lists(rows)
    assert table == rows and [table[i] for i in range(4)] == rows and table[-1] == [2, 2, 7]
    assert table.take([3, 1, 0]) == [rows[3], rows[1], rows[0]]
    assert table.lengths().tolist() == [2, 0, 1, 3]
    assert table.row(0).tolist() == [3, 1] and table != rows[:3]


def test_row_hashes_depend_on_the_bytes_not_the_place():
    table = StringTable.from_strings(["abc", "xabcx", "", "abd", "ab"])
    inner = StringTable(table.data, np.array([4]), np.array([7]))  # "abc" inside "xabcx"
    hashes, hashes_inner = row_hashes(table), row_hashes(inner)
    assert (hashes[:, 0] == hashes_inner[:, 0]).all()
    assert len({int(h) for h in hashes[0]}) == 5 and len({int(h) for h in hashes[1]}) == 5


def test_match_rows_is_the_dict_lookup():
    rng = random.Random(3)
    keys = [f"d{rng.randrange(50)}/{rng.randrange(50)}.wav" for _ in range(400)]
    key_counts = [rng.randrange(3) for _ in keys]
    queries = [f"d{rng.randrange(50)}/{rng.randrange(50)}.wav" for _ in range(300)] + ["ü.wav", ""]
    counts = [rng.randrange(3) for _ in queries]
    lookup = {(k, c): i for i, (k, c) in enumerate(zip(keys, key_counts))}  # the last equal key wins
    expected = [lookup.get((q, c), -1) for q, c in zip(queries, counts)]
    found = match_rows(StringTable.from_strings(queries), np.array(counts), StringTable.from_strings(keys), np.array(key_counts))
    assert found.tolist() == expected and 0 < sum(i >= 0 for i in expected) < len(queries)


def _reference(path: Path):
    """The line-by-line parse (the reader used before the vectorised one)."""
    root, files, counts = _parse_lines(path, path.read_bytes().decode("utf-8"))
    return root, files, counts


@pytest.mark.parametrize("body", [
    "/r\na/x.wav\t16000\nb/y.flac\t32000\n",
    "/r\na/x.wav\t16000\nb/y.flac\t32000",  # no final newline
    "/r\n",  # a root and no clips
    "/r",
    "/r\n\nx.wav\t5\n\n\ny.wav\t0\n",  # blank lines
    "/r\r\nx.wav\t5\r\ny.wav\t7\r\n",  # Windows line ends
    "/r\nx.wav\t 5\n  \ny.wav\t+7\n",  # what int() accepts; a line of spaces
    "/r\nx.wav\t5\ry.wav\t6\u2028z.wav\t7\n",  # line breaks str.splitlines knows
    "/r\n日本語/音.wav\t123456789012\nsp ace/ü.wav\t1\n",
    "/r\narchive.zip:1024:5000\t16000\npart.h5/Y0a1b2c3\t320000\n\t9\n",  # packed entries, an empty name
])
def test_packed_parse_gives_the_line_by_line_items(tmp_path, body):
    path = tmp_path / "t.tsv"
    path.write_bytes(body.encode("utf-8"))
    manifest = read_manifest(path)
    root, files, counts = _reference(path)
    assert manifest.root == Path(root.strip()) and manifest.files == files
    assert manifest.num_samples.dtype == np.int64 and manifest.num_samples.tolist() == counts


def test_random_manifests_parse_like_the_reference(tmp_path):
    rng = random.Random(7)
    alphabet = "ab/._-ü日 :"
    vectorised = 0
    for trial in range(30):
        lines = ["/root"]
        for _ in range(rng.randrange(0, 40)):
            kind = rng.random()
            name = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
            lines.append("" if kind < 0.1 else f"{name}\t{rng.randrange(0, 10**rng.randrange(1, 15))}")
        path = tmp_path / f"m{trial}.tsv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        manifest = read_manifest(path)
        _, files, counts = _reference(path)
        assert manifest.files == files and manifest.num_samples.tolist() == counts, path.read_text()
        raw = path.read_bytes()
        vectorised += parse_name_int_lines(raw, 1, start=raw.index(b"\n") + 1) is not None
    assert vectorised == 30  # every one of these took the vectorised path, not the reference's


@pytest.mark.parametrize("body, message", [
    ("/r\n" + "ok.wav\t1\n" * 1000 + "bad.wav 16000\n", r"t.tsv:1002: expected 'relative/path<TAB>num_samples'"),
    ("/r\nx.wav\t1\ny.wav\t2\tz\n", r"t.tsv:3: expected"),
    ("/r\n" + "ok.wav\t1\n" * 500 + "x.wav\tmany\n", r"t.tsv:502: sample count 'many' is not an integer"),
    ("/r\nx.wav\t1\r\ny.wav\t-3\r\n", r"t.tsv:3: negative sample count"),
    ("/r\nx.wav\t99999999999999999999\n", r"t.tsv:2: sample count 99999999999999999999 is too large"),
    ("\nx.wav\t1\n", "empty manifest"),
])
def test_a_bad_line_is_still_named(tmp_path, body, message):
    path = tmp_path / "t.tsv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_text_that_is_not_utf8_is_named_with_its_line(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes(b"/r\nx.wav\t1\ncaf\xe9.wav\t2\n")
    with pytest.raises(ManifestError, match=r"t.tsv:3: not UTF-8 text"):
        read_manifest(path)


def test_lists_given_to_a_manifest_are_packed(tmp_path):
    manifest = Manifest(path=tmp_path / "t.tsv", root=tmp_path, files=["a.wav", "b.wav"])
    assert isinstance(manifest.files, StringTable) and manifest.num_samples.tolist() == [0, 0]
    assert manifest.full_path(1) == tmp_path / "b.wav"
    with pytest.raises(ValueError, match="2 files but 1 sample counts"):
        Manifest(path=tmp_path / "t.tsv", root=tmp_path, files=["a.wav", "b.wav"], num_samples=[1])


def test_the_length_filter_reads_rates_kept_in_any_order(tmp_path):
    names = [f"c{i:03d}.wav" for i in range(300)]
    counts = [8000 + 10 * i for i in range(300)]
    path = tmp_path / "train.tsv"
    path.write_text(str(tmp_path / "gone") + "\n" + "".join(f"{n}\t{c}\n" for n, c in zip(names, counts)))
    rates = {n: (8000 if i % 2 else 16000) for i, n in enumerate(names)}
    shuffled = list(zip(names, counts))
    random.Random(1).shuffle(shuffled)
    rates_path(path).write_text("stale.wav\t1\t8000\n" + "".join(f"{n}\t{c}\t{rates[n]}\n" for n, c in shuffled))
    manifest = read_manifest(path, min_samples=10000, jobs=1)  # no header can be read: every rate comes from the file
    keep = [n for n, c in zip(names, counts) if (c * 16000 // rates[n]) >= 10000]
    assert manifest.files == keep and len(manifest.dropped) == len(names) - len(keep) > 0
    assert [c.sample_rate for c in manifest.dropped] == [rates[c.path] for c in manifest.dropped]
    table = read_rate_table(path)
    assert len(table[0]) == len(names) + 1


def test_labels_are_packed_per_clip():
    table = labels_for_files(["a/x.wav", "y.wav"], {"a/x": [2, 0], "y": []}, "t.lbl")
    assert isinstance(table, IntListTable) and table == [[2, 0], []]


def _private_kb() -> int:
    fields = {}
    with open("/proc/self/smaps_rollup") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields["Private_Dirty"] + fields["Private_Clean"]


def _growth_in_child(walk) -> int:
    """kB of private memory a forked child gains walking the rows, as a DataLoader worker would."""
    read, write = os.pipe()
    gc.collect()
    pid = os.fork()
    if pid == 0:  # the child: measure, walk, measure, report, leave at once
        try:
            os.close(read)
            gc.disable()  # a full collection would touch every object of the process: not the rows' doing
            before = _private_kb()
            walk()
            os.write(write, str(_private_kb() - before).encode())
        except BaseException as err:  # reported to the parent, which fails the test
            os.write(write, f"the child failed: {err!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as handle:
        report = handle.read()
    os.waitpid(pid, 0)
    if not report.lstrip("-").isdigit():
        pytest.fail(report or "the child reported nothing")
    return int(report)


BOUND_KB = 5 * 1024
ROWS = 300_000


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs /proc/self/smaps_rollup (Linux)")
def test_a_forked_worker_walking_every_row_copies_nothing(tmp_path):
    path = tmp_path / "big.tsv"
    path.write_text("/r\n" + "".join(f"unbalanced/{i % 997:03d}/Y{i:011d}.wav\t{160000 + i % 7}\n" for i in range(ROWS)))
    manifest = read_manifest(path)
    labels = IntListTable.from_lists([i % 527, (i * 7) % 527] for i in range(ROWS))
    as_lists = (list(manifest.files), manifest.num_samples.tolist())  # the layout before: a str and an int per row

    def walk_packed():
        total = 0
        for i in range(len(manifest)):
            total += len(manifest.files[i]) + int(manifest.num_samples[i]) + len(labels.row(i))
        assert total > 0

    def walk_lists():
        files, counts = as_lists
        total = 0
        for i in range(len(files)):
            total += len(files[i]) + counts[i]
        assert total > 0

    packed, lists = _growth_in_child(walk_packed), _growth_in_child(walk_lists)
    assert packed < BOUND_KB, f"a worker copied {packed} kB of a packed manifest of {ROWS} rows"
    # the control: the same walk over Python lists copies their pages (so this test can fail)
    assert lists > BOUND_KB, f"the list walk copied only {lists} kB: the measurement cannot tell"


def test_detection_clips_keep_labels_packed(tmp_path):
    import soundfile as sf

    from sslam_plugin.data.labels import LabelSet
    from sslam_plugin.detection.dataset import load_detection_split
    from sslam_plugin.detection.targets import FrameGrid
    from sslam_plugin.features import FbankConfig

    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("s0", "w1", "u2", "w3"):
        sf.write(str(audio / f"{name}.wav"), 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32), 16000)
    (tmp_path / "train.tsv").write_text("audio\n" + "".join(f"{n}.wav\t16000\n" for n in ("s0", "w1", "u2", "w3")))
    (tmp_path / "train.lbl").write_text("w1\tlow\nw3\thigh,low\n")
    (tmp_path / "train_strong.tsv").write_text("filename\tonset\toffset\tevent_label\ns0\t0.000\t0.320\thigh\n")
    labels = LabelSet.from_ids(["low", "high"])
    clips = load_detection_split(str(tmp_path), "train", labels, FbankConfig(target_length=64), FrameGrid(window_frames=64))
    assert len(clips) == 3 and clips.manifest.files == ["s0.wav", "w1.wav", "w3.wav"]  # the unlabelled clip left out
    assert isinstance(clips.weak, IntListTable) and clips.weak == [[], [0], [1, 0]]
    assert clips.strong.tolist() == [True, False, False] and list(clips.events) == [0]
    items = [clips[i] for i in range(3)]
    assert [item["strong"] for item in items] == [True, False, False]
    assert [item["clip_target"].tolist() for item in items] == [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    assert items[0]["frame_target"][:, 1].sum() == 8 and items[1]["frame_target"].sum() == 0  # 0.32 s at 40 ms
