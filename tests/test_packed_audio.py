"""Clips packed in zip shards (fairseq's archive.zip:OFFSET:LENGTH) and HDF5 files (the public EAT
layout) read exactly as the loose files they came from, and fail as loose files do."""

from __future__ import annotations

import multiprocessing
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from broken_audio import write_manifest
from sslam_plugin.data import ManifestError, read_manifest
from sslam_plugin.data.audio import AudioLoadError, audio_blocks, file_problem, load_audio
from sslam_plugin.data.labels import clip_id, clip_label_key, path_clip_id
from sslam_plugin.data.packed_audio import close_packed_handles
from sslam_plugin.data.packing import pack_manifest
from sslam_plugin.data.robust import RobustClipReader, crop_read_frames, crop_samples, preflight_check
from sslam_plugin.data.scan import AudioHeader, probe_header
from sslam_plugin.features import FbankConfig

h5py = pytest.importorskip("h5py")

CFG = FbankConfig(target_length=64)  # 1 s of 16 kHz and 2 s of 44.1 kHz are read whole resp. cropped


def noise(rng, frames, channels=1):
    data = rng.uniform(-0.6, 0.6, (frames, channels))
    return data[:, 0] if channels == 1 else data


@pytest.fixture(scope="module")
def loose(tmp_path_factory) -> Path:
    """Loose clips: 16 kHz PCM-16 WAV, 44.1 kHz stereo 24-bit FLAC (long enough to be cropped), 32 kHz float WAV."""
    root = tmp_path_factory.mktemp("loose")
    rng = np.random.default_rng(0)
    (root / "dog").mkdir()
    sf.write(root / "dog/a.wav", noise(rng, 16000), 16000, subtype="PCM_16")
    sf.write(root / "dog/b.flac", noise(rng, 88200, 2), 44100, subtype="PCM_24")
    sf.write(root / "c.wav", noise(rng, 24000), 32000, subtype="FLOAT")
    write_manifest(root / "train.tsv", root, {"dog/a.wav": 16000, "dog/b.flac": 88200, "c.wav": 24000})
    return root


@pytest.fixture(scope="module")
def packed(loose, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("packed")
    pack_manifest(loose / "train.tsv", dest, shard_size=2)
    return dest


def test_zip_entries_give_the_loose_files_waveforms_and_features_bit_for_bit(loose, packed):
    plain, zipped = read_manifest(loose / "train.tsv"), read_manifest(packed / "train.tsv")
    assert [f.split(":")[0] for f in zipped.files] == ["shards/train-00000.zip"] * 2 + ["shards/train-00001.zip"]
    assert list(zipped.num_samples) == list(plain.num_samples)
    ours, theirs = RobustClipReader(plain, CFG), RobustClipReader(zipped, CFG)
    for i in range(len(plain)):
        wave, rate = load_audio(plain.full_path(i))
        packed_wave, packed_rate = load_audio(zipped.full_path(i))
        assert packed_rate == rate and torch.equal(packed_wave, wave)
        assert torch.equal(load_audio(zipped.full_path(i), 999)[0], wave[:999])  # a beginning only
        blocks = np.concatenate([b for b, _ in audio_blocks(zipped.full_path(i), block_frames=4096)])
        assert np.array_equal(blocks, wave.numpy())
        assert torch.equal(theirs.features(i), ours.features(i))
        assert probe_header(str(zipped.full_path(i))) == probe_header(str(plain.full_path(i)))
    # the 44.1 kHz clip takes the cropped path: only the beginning is decoded, the features are the same
    assert plain.num_samples[1] > 2 * crop_read_frames(crop_samples(CFG), 44100)


def test_other_formats_are_kept_as_they_are_and_decode_the_same(tmp_path):
    """Ogg/Vorbis and MP3 members: libsndfile decodes them from memory exactly as from the file."""
    formats = {"o.ogg": ("OGG", "VORBIS"), "m.mp3": ("MP3", "MPEG_LAYER_III")}
    if "MP3" not in sf.available_formats():
        formats.pop("m.mp3")
    wave = noise(np.random.default_rng(2), 24000)
    for name, (fmt, subtype) in formats.items():
        sf.write(tmp_path / name, wave, 48000, format=fmt, subtype=subtype)
    source = write_manifest(tmp_path / "t.tsv", tmp_path, {n: sf.info(tmp_path / n).frames for n in formats})
    pack_manifest(source, tmp_path / "packed", shard_size=4)
    zipped = read_manifest(tmp_path / "packed/t.tsv")
    for i, name in enumerate(formats):
        with zipfile.ZipFile(tmp_path / "packed/shards/t-00000.zip") as archive:
            assert archive.read(name) == (tmp_path / name).read_bytes()
        assert torch.equal(load_audio(zipped.full_path(i))[0], load_audio(tmp_path / name)[0])


def test_hdf5_entries_give_the_loose_files_waveforms_and_features_bit_for_bit(tmp_path):
    """A 32 kHz float clip without a rate attribute (the public EAT layout) and an int16 clip with one."""
    rng = np.random.default_rng(1)
    eat = noise(rng, 70000).astype(np.float32)  # 2.2 s at 32 kHz: cropped before resampling
    pcm = (noise(rng, 12000) * 32767).astype(np.int16)
    sf.write(tmp_path / "eat.wav", eat, 32000, subtype="FLOAT")
    sf.write(tmp_path / "pcm.wav", pcm, 16000, subtype="PCM_16")
    with h5py.File(tmp_path / "part0.h5", "w") as h5:
        h5.create_dataset("Yeat", data=eat)
        h5.create_dataset("Ypcm", data=pcm).attrs["sample_rate"] = 16000
    plain = read_manifest(write_manifest(tmp_path / "loose.tsv", tmp_path, {"eat.wav": 70000, "pcm.wav": 12000}))
    h5 = read_manifest(write_manifest(tmp_path / "h5.tsv", tmp_path, {"part0.h5/Yeat": 70000, "part0.h5/Ypcm": 12000}))
    ours, theirs = RobustClipReader(plain, CFG), RobustClipReader(h5, CFG)
    for i, rate in enumerate((32000, 16000)):
        wave, loose_rate = load_audio(plain.full_path(i))
        h5_wave, h5_rate = load_audio(h5.full_path(i))
        assert h5_rate == loose_rate == rate and torch.equal(h5_wave, wave)
        assert torch.equal(load_audio(h5.full_path(i), lambda r, n: n // 3)[0], wave[: len(wave) // 3])
        blocks = np.concatenate([b for b, _ in audio_blocks(h5.full_path(i), block_frames=5000)])
        assert np.array_equal(blocks, wave.numpy())
        assert torch.equal(theirs.features(i), ours.features(i))
        assert probe_header(str(h5.full_path(i))) == AudioHeader(len(wave), rate, 1)
    assert path_clip_id("part0.h5/Yeat") == clip_id("part0.h5/Yeat") == "Yeat"
    assert clip_id("part0.h5/group/Y1.wav") == "Y1"


def test_zip_entries_are_named_by_their_member_for_labels(loose, packed):
    zipped = read_manifest(packed / "train.tsv")
    ids = [path_clip_id(rel, zipped.root) for rel in zipped.files]
    assert ids == ["dog/a", "dog/b", "c"]
    assert [clip_id(rel, zipped.root) for rel in zipped.files] == ["a", "b", "c"]
    assert clip_label_key(zipped.files[1], {"b": [0]}, zipped.root) == "b"
    # an archive that cannot be found names the entry by itself, which labels can still be keyed by
    assert path_clip_id(zipped.files[0], loose / "elsewhere") == zipped.files[0]
    assert clip_label_key(zipped.files[0], {zipped.files[0]: [1]}, loose / "elsewhere") == zipped.files[0]
    assert clip_id(zipped.files[0]) == zipped.files[0].rsplit("/", 1)[-1]  # (relative to the working folder)
    assert clip_label_key(zipped.files[0], {clip_id(zipped.files[0]): [1]}, zipped.root) == clip_id(zipped.files[0])


@pytest.fixture
def damaged(packed, tmp_path) -> Path:
    """A manifest over the packed shards with good entries and each kind of damaged one."""
    good = read_manifest(packed / "train.tsv").files
    archive, offset, length = good[0].rsplit(":", 2)
    with h5py.File(tmp_path / "part.h5", "w") as h5:
        h5.create_dataset("Yok", data=np.full(8000, 0.25, dtype=np.float32))
    (tmp_path / "shards").symlink_to(packed / "shards")
    entries = {
        good[0]: 16000,
        f"{archive}:{int(offset) + 100}:{length}": 16000,  # bytes that are not an audio file's start
        f"{archive}:{offset}:{10**9}": 16000,  # past the archive's end
        "part.h5/Yok": 8000,
        "part.h5/Ygone": 8000,  # no such dataset
        good[2]: 24000,
    }
    return write_manifest(tmp_path / "train.tsv", tmp_path, entries)


REASONS = ["cannot decode audio", "damaged archive member (bytes", "damaged archive member (no dataset 'Ygone'"]


def test_a_damaged_member_is_a_bad_clip_counted_and_listed(damaged):
    manifest = read_manifest(damaged)
    reader = RobustClipReader(manifest, CFG, seed=1)
    bad = {1: REASONS[0], 2: REASONS[1], 4: REASONS[2]}
    listed = 0
    for index in range(len(manifest)):
        clip = reader.read(index)
        listed += len(clip.failures)  # a substitute may be a bad clip too
        if index not in bad:
            assert clip.failures == [] and clip.index == index
            continue
        failure = clip.failures[0]
        assert clip.index not in bad and failure.path == str(manifest.full_path(index))
        assert failure.reason.startswith(bad[index]), failure.reason
    assert sorted(reader.known_bad) == sorted(bad) and reader.num_failures == listed >= 3
    with pytest.raises(AudioLoadError, match=r"zip:\d+:1000000000: damaged archive member \(bytes .* lie past the end"):
        load_audio(manifest.full_path(2))
    assert file_problem(manifest.full_path(4)).startswith(REASONS[2])
    assert probe_header(str(manifest.full_path(1))).startswith("unreadable: ")
    # the pre-flight check lists them and lets training start (3 of 6 is not more than half)
    failures = preflight_check(manifest, CFG, num_clips=6)
    assert [f.index for f in failures] == sorted(bad)


def test_a_missing_archive_is_file_not_found_and_stops_the_preflight_with_its_name(damaged):
    manifest = read_manifest(damaged)
    (damaged.parent / "part.h5").unlink()
    with pytest.raises(AudioLoadError, match=r"part\.h5/Yok: file not found \(the archive .*part\.h5\)"):
        load_audio(manifest.full_path(3))
    assert probe_header(str(manifest.full_path(3))) == f"missing: file not found (the archive {damaged.parent / 'part.h5'})"
    with pytest.raises(ManifestError, match=r"the archive .*part\.h5, holding 2 of its clips, is missing"):
        preflight_check(manifest, CFG, num_clips=1)  # even when no sampled clip lies in it
    (damaged.parent / "shards").unlink()
    with pytest.raises(ManifestError, match=r"the archive .*shards/train-00000\.zip, holding 3 of its clips, is missing"):
        preflight_check(manifest, CFG, num_clips=1)
    clip = RobustClipReader(manifest, CFG, policy="silence").read(0)  # (every archive is gone now)
    assert clip.failures[0].reason == f"file not found (the archive {damaged.parent / 'shards/train-00000.zip'})"


def _read_in_child(path: str, queue) -> None:
    queue.put(load_audio(path)[0].numpy())


def test_a_forked_worker_reads_through_its_own_handles(packed, tmp_path):
    """Archives opened before a fork (zip descriptors, HDF5 files) are not shared with the child."""
    data = np.linspace(-0.5, 0.5, 4000, dtype=np.float32)
    with h5py.File(tmp_path / "p.h5", "w") as h5:
        h5.create_dataset("Y", data=data)
    zipped = read_manifest(packed / "train.tsv")
    paths = [str(tmp_path / "p.h5/Y"), str(zipped.full_path(0))]
    expected = [load_audio(p)[0].numpy() for p in paths]  # both archives now open in this process
    context = multiprocessing.get_context("fork")
    for path, want in zip(paths, expected):
        queue = context.Queue()
        child = context.Process(target=_read_in_child, args=(path, queue))
        child.start()
        got = queue.get(timeout=60)
        child.join(60)
        assert child.exitcode == 0 and np.array_equal(got, want)
    assert np.array_equal(load_audio(paths[0])[0].numpy(), data)  # the parent's handles still work
    close_packed_handles()


def test_packed_members_are_real_stored_zip_members(packed):
    with zipfile.ZipFile(packed / "shards/train-00000.zip") as archive:
        assert archive.testzip() is None  # CRCs match
        assert [(i.filename, i.compress_type) for i in archive.infolist()] == [
            ("dog/a.wav", zipfile.ZIP_STORED), ("dog/b.flac", zipfile.ZIP_STORED)]
        entry = read_manifest(packed / "train.tsv").files[1]
        offset, length = map(int, entry.rsplit(":", 2)[1:])
        raw = (packed / "shards/train-00000.zip").read_bytes()[offset: offset + length]
        assert raw == archive.read("dog/b.flac")


def test_without_h5py_an_hdf5_entry_says_what_to_install(tmp_path, monkeypatch):
    with h5py.File(tmp_path / "p.h5", "w") as h5:
        h5.create_dataset("Y", data=np.zeros(800, np.float32))
    monkeypatch.setitem(sys.modules, "h5py", None)  # `import h5py` now fails
    with pytest.raises(AudioLoadError, match=r"p\.h5/Y: reading HDF5 entries needs h5py: pip install 'sslam-plugin\[hdf5\]'"):
        load_audio(tmp_path / "p.h5/Y")


def test_prepare_labels_and_validate_read_hdf5_entries(tmp_path, monkeypatch, capsys):
    """An EAT HDF5 corpus labelled through `sslam-prepare-labels csv`, then checked."""
    from sslam_plugin.cli.prepare_labels import main as prepare_labels
    from sslam_plugin.cli.validate_manifest import main as validate

    monkeypatch.chdir(tmp_path)
    Path("audio").mkdir()
    with h5py.File("audio/part0.h5", "w") as h5:
        h5.create_dataset("Yaaa", data=np.full(32000, 0.1, np.float32))
        h5.create_dataset("Ybbb", data=np.full(48000, 0.1, np.float32))
    Path("train.csv").write_text("part0.h5/Yaaa,dog\npart0.h5/Ybbb,cat;dog\npart0.h5/Ygone,cat\n")
    args = ["csv", "--split", "train=train.csv", "--audio-dir", "audio", "--dest", "out", "--label-sep", ";"]
    assert prepare_labels([*args, "--no-progress"]) == 0
    assert Path("out/train.tsv").read_text().splitlines()[1:] == ["part0.h5/Yaaa\t32000", "part0.h5/Ybbb\t48000"]
    assert Path("out/train.lbl").read_text().splitlines() == ["Yaaa\tdog", "Ybbb\tcat,dog"]
    rejected = Path("out/rejected.tsv").read_text().splitlines()[1:]
    assert rejected == ["part0.h5/Ygone\tunreadable: damaged archive member (no dataset 'Ygone' in audio/part0.h5)"]
    capsys.readouterr()
    assert validate(["out/train.tsv", "--decode", "--no-progress"]) == 0
    assert "checked 2 of 2 clips" in capsys.readouterr().out
