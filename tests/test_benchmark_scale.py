"""``sslam-benchmark scale`` at a tiny size: every number measured, the tables shaped as documented."""

from __future__ import annotations

import os

import numpy as np

from sslam_plugin.cli import benchmark_scale as scale


def test_rows_are_distinct_audioset_like_names_that_read_as_the_corpus_clips(tmp_path):
    corpus = scale.make_corpus(tmp_path, 3, 0.05)
    lines = scale.add_rows(corpus, 10)
    names = [line.split("\t")[0] for line in lines]
    assert len(set(names)) == 10 and all(len(n) == len("unbal/") + 11 + len(".wav") for n in names)
    assert scale.clip_ids(0, 3) + scale.clip_ids(3, 7) == scale.clip_ids(0, 10)  # ranges continue one sequence
    for k, name in enumerate(names):  # row k is clip k % 3, byte for byte
        source = tmp_path / names[k % 3]
        assert (tmp_path / name).read_bytes() == source.read_bytes()
        assert lines[k].split("\t")[1] == str(int(0.05 * scale.CORPUS_RATE))


def test_forked_workers_report_the_memory_they_copy():
    buffer = bytearray(24 << 20)  # in the parent: shared with a forked worker until written

    def write_half() -> int:
        for i in range(0, len(buffer) // 2, 4096):
            buffer[i] = 1
        return 1

    (idle,) = scale._forked_passes(lambda: 0, 1)
    (busy,) = scale._forked_passes(write_half, 1)
    assert busy["private_mib"] - busy["private_before_mib"] >= 11.5  # the 12 MiB written were copied
    assert idle["private_mib"] - idle["private_before_mib"] < 2
    assert buffer.count(1) == 0  # the parent's pages are its own


def test_tiny_run_measures_every_size_and_storage(tmp_path):
    result = scale.run([2000], workers=1, corpus_size=6, read_clips=8, clip_seconds=0.1, shard_size=4,
                       repeats=1, compare_lists=True, workdir=tmp_path)
    assert os.listdir(tmp_path) == []  # the temporary corpus, links and shards are removed
    sizes = result["manifests"]
    assert [r["rows"] for r in sizes] == [2000]
    for r in sizes:
        assert r["worker_rows"] == [r["rows"]] and r["lists_worker_rows"] == [r["rows"]]  # one full pass each
        assert r["rows_read"] == [8, 8]
        for key in ("worker_private_mib", "lists_worker_private_mib"):
            assert len(r[key]) == 1 and r[key][0] > 0
        assert r["load_s"] > 0 and r["manifest_mib"] > 0 and r["files_type"] == "StringTable"
    reading = {r["storage"]: r for r in result["reading"]}
    assert list(reading) == ["loose files", "zip shards", "HDF5 (EAT layout)"]
    for name, files in (("loose files", 6), ("zip shards", 2), ("HDF5 (EAT layout)", 2)):
        r = reading[name]
        assert r["clips"] == 8 and r["files"] == files and r["same_samples_as_loose"] is True
        loose = reading["loose files"]["clips_per_s"]
        assert r["clips_per_s"] > 0 and np.isclose(r["vs_loose"], r["clips_per_s"] / loose)

    table = scale.markdown(result).splitlines()
    header = next(line for line in table if line.startswith("| rows |"))
    rows = [line for line in table if line.startswith("| 2,000 |")]
    assert len(rows) == 1 and all(line.count("|") == header.count("|") for line in rows)
    storages = [line for line in table if line.startswith(("| loose", "| zip", "| HDF5"))]
    assert len(storages) == 3 and all(line.endswith("| yes |") for line in storages)
    assert "| 8/8 |" in rows[0]
