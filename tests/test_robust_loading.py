"""Broken clips during training: substitution, reporting across DataLoader workers, pre-flight errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from broken_audio import make_collection, sine, write, write_manifest
from sslam_plugin.data import ManifestError, load_audio, read_manifest
from sslam_plugin.data.robust import ClipFailure, RobustClipReader, preflight_check
from sslam_plugin.features import FbankConfig

CFG = FbankConfig(target_length=128)

# manifest entry -> what the reader reports (None: usable)
ENTRIES = {
    "good_16k.wav": None,
    "corrupt.wav": "cannot decode audio",
    "stereo.wav": None,
    "empty.wav": "empty file (0 bytes)",
    "zero.wav": "file holds no samples",
    "hi_44k.wav": None,
    "nan.wav": "contains NaN or Inf samples",
    "u8.wav": None,
    "deleted_since.wav": "file not found",
    "dangling.wav": "file not found",
    "short.wav": "waveform has 100 samples; at least 400",
    "good.flac": None,
}


@pytest.fixture
def manifest(tmp_path):
    root = tmp_path / "audio"
    make_collection(root)
    return read_manifest(write_manifest(tmp_path / "train.tsv", root, {rel: 16000 for rel in ENTRIES}))


def test_each_broken_clip_is_substituted_with_its_reason(manifest):
    reader = RobustClipReader(manifest, CFG, seed=3)
    good = {i for i, rel in enumerate(ENTRIES) if ENTRIES[rel] is None}
    for index, (rel, reason) in enumerate(ENTRIES.items()):
        clip = reader.read(index)
        assert clip.features.shape == (128, 128)
        assert torch.isfinite(clip.features).all()
        if reason is None:
            assert clip.index == index and clip.failures == []
        else:
            assert clip.substituted and clip.index != index and clip.index in good
            first = clip.failures[0]
            assert first.index == index and first.path == str(manifest.root / rel)
            assert reason in first.reason, (rel, first.reason)
            assert not first.reason.startswith(str(manifest.root))  # the path is not repeated
            assert all(f.index not in good for f in clip.failures)
            assert torch.equal(clip.features, reader.features(clip.index))
    assert set(reader.known_bad) == set(range(len(ENTRIES))) - good


def test_substitutes_are_deterministic_and_never_the_clip_itself(manifest):
    a, b = RobustClipReader(manifest, CFG, seed=5), RobustClipReader(manifest, CFG, seed=5)
    picks = [[a.substitute(i, k) for k in range(1, 6)] for i in range(len(manifest))]
    assert picks == [[b.substitute(i, k) for k in range(1, 6)] for i in range(len(manifest))]
    assert all(i not in row and all(0 <= p < len(manifest) for p in row) for i, row in enumerate(picks))
    assert a.read(1).index == b.read(1).index  # corrupt.wav -> the same substitute in any process


def test_a_failed_file_is_not_decoded_again(manifest, monkeypatch):
    reader = RobustClipReader(manifest, CFG, seed=0)
    calls = []
    original = reader.features
    monkeypatch.setattr(reader, "features", lambda i, transform=None: calls.append(i) or original(i, transform))
    first, second = reader.read(1), reader.read(1)
    assert calls.count(1) == 1
    assert first.index == second.index and first.failures == second.failures
    assert reader.num_failures == 2 * len(first.failures)  # but each use is counted


def test_too_many_failures_in_a_row_is_an_error(tmp_path):
    root = tmp_path / "audio"
    make_collection(root)
    m = read_manifest(write_manifest(tmp_path / "t.tsv", root, {"corrupt.wav": 1, "empty.wav": 1, "nan.wav": 1}))
    with pytest.raises(RuntimeError, match="3 clips in a row .* could not be used .*validate_manifest.py"):
        RobustClipReader(m, CFG, max_substitutions=2).read(0)


def test_silence_policy_keeps_the_clip(manifest):
    reader = RobustClipReader(manifest, CFG, policy="silence")
    clip = reader.read(1)
    assert clip.index == 1 and len(clip.failures) == 1
    expected = (0.0 - CFG.norm_mean) / (2 * CFG.norm_std)
    assert torch.allclose(clip.features, torch.full((128, 128), expected))


def test_other_rates_channels_and_sample_formats_are_converted(manifest):
    reader = RobustClipReader(manifest, CFG)
    mono, stereo, hi, u8 = (reader.features(list(ENTRIES).index(n)) for n in ("good_16k.wav", "stereo.wav", "hi_44k.wav", "u8.wav"))
    assert torch.equal(stereo, mono)  # two equal channels average to the same mono signal
    middle = slice(5, 95)  # frames away from the padding
    assert (hi[middle] - mono[middle]).abs().mean() < 0.05  # 44.1 kHz resampled to 16 kHz
    assert hi[50].argmax() == mono[50].argmax()
    waveform, rate = load_audio(manifest.root / "u8.wav")
    assert rate == 16000 and waveform.dtype == torch.float32
    assert np.abs(waveform.numpy() - sine(16000, 1.0)).max() <= 1 / 128  # 8-bit quantisation step
    assert u8[50].argmax() == mono[50].argmax()


def test_preflight_missing_root(tmp_path):
    m = read_manifest(write_manifest(tmp_path / "t.tsv", tmp_path / "nowhere", {"a.wav": 1}))
    with pytest.raises(ManifestError, match=r"t.tsv: the audio root .*nowhere \(its first line\) does not exist"):
        preflight_check(m, CFG)


def test_preflight_most_files_failing(tmp_path):
    root = tmp_path / "audio"
    make_collection(root)
    entries = {"good_16k.wav": 1, "corrupt.wav": 1, "empty.wav": 1, "nan.wav": 1, "gone.wav": 1}
    m = read_manifest(write_manifest(tmp_path / "t.tsv", root, entries))
    with pytest.raises(ManifestError, match=r"4 of 5 clips checked before training cannot be used \(e.g. \S+corrupt.wav: cannot decode audio \(Format not recognised.\)"):
        preflight_check(m, CFG)
    assert preflight_check(m, CFG, max_failed_fraction=0.9) != []
    assert preflight_check(m, CFG, num_clips=0) == []


def test_preflight_tolerates_a_few_broken_files(manifest):
    failures = preflight_check(manifest, CFG, num_clips=64, max_failed_fraction=0.75)  # 7 of 12
    assert sorted(f.index for f in failures) == [i for i, r in enumerate(ENTRIES.values()) if r is not None]


def test_preflight_samples_evenly(tmp_path):
    root = tmp_path / "audio"
    for i in (0, 10, 20):
        write(root / f"g{i}.wav", sine(16000, 0.1), 16000)
    entries = {f"g{i}.wav" if i % 10 == 0 else f"gone{i}.wav": 1 for i in range(21)}
    m = read_manifest(write_manifest(tmp_path / "t.tsv", root, entries))
    # 3 clips checked: indices 0, 10 and 20, all readable
    assert preflight_check(m, CFG, num_clips=3) == []
    assert [f.index for f in preflight_check(m, CFG, num_clips=5)] == [5, 15]  # 0, 5, 10, 15, 20: 2 of 5 fail
    with pytest.raises(ManifestError, match="4 of 6 clips"):
        preflight_check(m, CFG, num_clips=6)  # 0, 4, 8, 12, 16, 20: only 0 and 20 exist


# ---------------------------------------------------------------- the fairseq dataset and task


@pytest.fixture
def dataset(manifest):
    pytest.importorskip("fairseq")
    from sslam_plugin.training.dataset import FbankMaskDataset

    return FbankMaskDataset(manifest, CFG, patch_size=16, clone_batch=2, mask_ratio=0.8,
                            mask_ratio_adjust=0.07, mask_block_size=5, seed=1)


def test_failures_reach_the_main_process_from_dataloader_workers(dataset):
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=4, num_workers=2, collate_fn=dataset.collater, shuffle=False,
        multiprocessing_context="fork",
    )
    batches = list(loader)
    assert sum(b["net_input"]["source"].shape[0] for b in batches) == len(ENTRIES)
    failed = [f for b in batches for f in b["failed_clips"]]
    bad = {str(dataset.manifest.root / rel) for rel, r in ENTRIES.items() if r is not None}
    assert {f.path for f in failed} == bad
    assert all(isinstance(f, ClipFailure) for f in failed)
    assert dataset.failed == []  # the workers' counters are not this process's


def test_failed_clip_log_counts_lists_and_resumes(tmp_path):
    pytest.importorskip("fairseq")
    from sslam_plugin.training.task import FailedClipLog

    log = FailedClipLog(str(tmp_path / "checkpoints"))
    a, b = ClipFailure(1, "/d/a.wav", "cannot decode audio (x)"), ClipFailure(2, "/d/b.wav", "file not found")
    assert log.record([]) == 0
    assert log.record([a, a, b]) == 3
    assert log.record([a]) == 1
    assert log.substituted == 4
    listed = (tmp_path / "checkpoints" / "failed_clips.tsv").read_text().splitlines()
    assert listed == ["/d/a.wav\tcannot decode audio (x)", "/d/b.wav\tfile not found"]
    resumed = FailedClipLog(str(tmp_path / "checkpoints"))
    resumed.record([b, ClipFailure(3, "/d/c.wav", "contains NaN or Inf samples")])
    listed = (tmp_path / "checkpoints" / "failed_clips.tsv").read_text().splitlines()
    assert listed[2:] == ["/d/c.wav\tcontains NaN or Inf samples"]


def test_task_fails_before_training_when_most_clips_fail(tmp_path):
    pytest.importorskip("fairseq")
    from sslam_plugin.training.task import SSLAMPretrainingTask, SSLAMPretrainingTaskConfig

    root = tmp_path / "audio"
    make_collection(root)
    write_manifest(tmp_path / "train.tsv", root, {"corrupt.wav": 20000, "empty.wav": 20000, "good_16k.wav": 20000})
    cfg = SSLAMPretrainingTaskConfig(data=str(tmp_path), target_length=128, clone_batch=2, patch_size=16, seed=1)
    task = SSLAMPretrainingTask(cfg)
    with pytest.raises(ManifestError, match="2 of 3 clips checked before training cannot be used"):
        task.load_dataset("train")
    write_manifest(tmp_path / "train.tsv", tmp_path / "unmounted", {"a.wav": 20000})
    with pytest.raises(ManifestError, match=r"the audio root .*unmounted \(its first line\) does not exist"):
        task.load_dataset("train")
