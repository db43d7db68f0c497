"""Per-clip augmentations and weighted sampling of the labelled dataset against the official definitions.

Official (EAT ``raw_audio_dataset.py`` / ``mae_image_dataset.py``): the 16 kHz
zero-mean waveform rolled by k ~ U{0..N-1} and scaled by Beta(10, 10) + 0.5
before the fbank; ``noise``: ``x + U^(T x M) * u / 10`` then a roll by -10..9
frames; weighted sampling without replacement. Here every draw is seeded by
(seed, epoch, clip index).
"""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from sslam_plugin.augment import noise_and_shift, roll_and_scale
from sslam_plugin.data import read_label_descriptors, read_manifest
from sslam_plugin.data.audio import load_audio
from sslam_plugin.data.labelled import LabelledClips, load_labelled_split
from sslam_plugin.features import (
    FbankConfig,
    kaldi_fbank,
    normalize_fbank,
    pad_or_crop,
    resample_to,
    waveform_to_features,
)

FBANK = FbankConfig(target_length=200)
RATES = [16000, 16000, 32000, 16000, 22050, 16000]


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory) -> Path:
    """Six 1-2.4 s clips (some at other rates), labelled a or b, as train.tsv/train.lbl/label_descriptors.csv."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    lines, labels = [str(root / "audio")], []
    (root / "audio").mkdir()
    for i, rate in enumerate(RATES):
        n = int(rate * (1.0 + 0.3 * i))
        t = np.arange(n) / rate
        wav = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t * (1 + t)) + 0.05 * rng.standard_normal(n) + 0.1
        sf.write(root / "audio" / f"c{i}.wav", wav.astype(np.float32), rate, subtype="FLOAT")
        lines.append(f"c{i}.wav\t{n}")
        labels.append(f"c{i}\t{'a' if i % 2 else 'b'}")
    (root / "train.tsv").write_text("\n".join(lines) + "\n")
    (root / "train.lbl").write_text("\n".join(labels) + "\n")
    (root / "label_descriptors.csv").write_text("0,a,A\n1,b,B\n")
    return root


def clips(folder: Path, **kwargs) -> LabelledClips:
    manifest = read_manifest(folder / "train.tsv")
    return LabelledClips(manifest, [[0]] * len(manifest), 2, FBANK, training=True, seed=5, **kwargs)


def waveform_16k(folder: Path, index: int) -> torch.Tensor:
    """(N,) clip ``index`` at 16 kHz with its mean removed, as the front end has it before the fbank."""
    wav, rate = load_audio(folder / "audio" / f"c{index}.wav")
    wav = resample_to(wav, rate).float()
    return wav - wav.mean()


def features_of(fbank: torch.Tensor) -> torch.Tensor:
    """(T, M) normalised features of a (frames, M) log-mel, padded or cropped."""
    return normalize_fbank(pad_or_crop(fbank, FBANK.target_length), FBANK.norm_mean, FBANK.norm_std)


def official_fbank(wav: torch.Tensor) -> torch.Tensor:
    """The official dataset's call on a 16 kHz waveform (EAT ``raw_audio_dataset.py``)."""
    return torchaudio.compliance.kaldi.fbank(
        wav[None], htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10,
    )


# ------------------------------------------------------------------ roll and gain


def test_roll_and_scale_is_np_roll_times_gain():
    w = torch.randn(16000)
    w -= w.mean()
    for seed in range(20):
        out = roll_and_scale(w, np.random.default_rng(seed))
        replay = np.random.default_rng(seed)
        k, g = int(replay.integers(len(w))), float(replay.beta(10, 10)) + 0.5
        assert 0.5 <= g <= 1.5
        np.testing.assert_allclose(out.numpy(), np.roll(w.numpy(), k) * g, rtol=1e-6, atol=0)
        assert torch.equal(out, torch.from_numpy(np.roll(w.numpy(), k)) * g)


def test_roll_gain_is_beta_10_10_plus_half_and_offsets_uniform():
    n = 1000
    gains, shifts = [], []
    for seed in range(4000):
        rng = np.random.default_rng([seed, 1, 3])
        out = roll_and_scale(torch.arange(1.0, n + 1.0), rng)  # sample values 1..n: the shift and gain show
        shifts.append(int(torch.argmin(out)))  # where sample 1 went
        gains.append(float(out[shifts[-1]]))
    gains, shifts = np.array(gains), np.array(shifts)
    assert gains.min() >= 0.5 and gains.max() <= 1.5
    assert abs(gains.mean() - 1.0) < 0.01
    assert abs(gains.std() - np.sqrt(1 / 84)) < 0.006  # Var Beta(10, 10) = 100 / (20^2 * 21)
    assert shifts.min() < 10 and shifts.max() > n - 10 and abs(shifts.mean() - (n - 1) / 2) < 15


def test_roll_aug_fbank_equals_the_fbank_of_the_rolled_scaled_waveform(data_folder):
    rolled = clips(data_folder, roll=True)
    rolled.set_epoch(3)
    for index in range(len(RATES)):
        wav = waveform_16k(data_folder, index)
        rng = np.random.default_rng([5, 3, index])  # (seed, epoch, index)
        k, g = int(rng.integers(len(wav))), float(rng.beta(10, 10)) + 0.5
        augmented = torch.from_numpy(np.roll(wav.numpy(), k)) * g
        item = rolled[index]["source"]  # (1, T, M)
        assert item.shape == (1, FBANK.target_length, FBANK.num_mel_bins)
        assert torch.equal(item[0], features_of(kaldi_fbank(augmented))), index  # the same operations
        # and the official pipeline: torchaudio's Kaldi fbank of the rolled, scaled clip (to round-off)
        assert torch.allclose(item[0], features_of(official_fbank(augmented)), rtol=0, atol=1e-5), index
    # a real change, reproducible, new per epoch
    plain = clips(data_folder)
    assert not torch.allclose(plain[2]["source"], rolled[2]["source"], atol=1e-3)
    assert torch.equal(rolled[2]["source"], _at_epoch(data_folder, 3)[2]["source"])
    before = rolled[2]["source"]
    rolled.set_epoch(4)
    assert not torch.equal(rolled[2]["source"], before)


def _at_epoch(folder: Path, epoch: int) -> LabelledClips:
    fresh = clips(folder, roll=True)  # a new instance, as in another worker or a resumed run
    fresh.set_epoch(epoch)
    return fresh


def test_identity_transform_keeps_the_front_end_to_round_off():
    wav = torch.randn(24000) * 0.1 + 0.05  # not zero-mean, at another rate
    plain = waveform_to_features(wav, 24000, FBANK)
    same = waveform_to_features(wav, 24000, FBANK, transform=lambda w: w)
    assert torch.allclose(same, plain, rtol=0, atol=1e-4)  # only compute_fbank's second mean removal differs
    with pytest.raises(ValueError, match="at least 400"):
        waveform_to_features(torch.zeros(100), 16000, FBANK, transform=lambda w: w)


def test_roll_fbank_is_the_old_circular_frame_shift(data_folder):
    plain, rolled = clips(data_folder), clips(data_folder, roll=True, roll_fbank=True)
    rolled.set_epoch(2)
    for index in range(len(RATES)):
        shift = int(np.random.default_rng([5, 2, index]).integers(0, FBANK.target_length))
        assert torch.equal(rolled[index]["source"], torch.roll(plain[index]["source"], shift, dims=1))


# ------------------------------------------------------------------ noise


def test_noise_and_shift_is_the_official_definition():
    x = torch.randn(100, 16)
    for seed in range(10):
        out = noise_and_shift(x, np.random.default_rng(seed))
        replay = np.random.default_rng(seed)
        noise = torch.from_numpy(replay.random((100, 16), dtype=np.float32))
        u = float(replay.random())
        s = int(replay.integers(-10, 10))
        assert -10 <= s <= 9
        assert torch.equal(out, torch.roll(x + noise * u / 10, s, dims=0))
        unshifted = torch.roll(out, -s, dims=0) - x
        assert float(unshifted.min()) >= 0 and float(unshifted.max()) <= u / 10 + 1e-6


def test_noise_shifts_cover_minus_10_to_9():
    x = torch.zeros(40, 1)
    x[0] = -1.0  # a marker frame: the shift shows where it went
    shifts = set()
    for seed in range(400):
        out = noise_and_shift(x, np.random.default_rng(seed))
        position = int(torch.argmin(out[:, 0]))
        shifts.add(position if position < 20 else position - 40)
    assert shifts == set(range(-10, 10))


def test_noise_aug_item_is_the_noisy_shifted_plain_item(data_folder):
    plain, noisy = clips(data_folder), clips(data_folder, noise=True)
    noisy.set_epoch(7)
    for index in range(len(RATES)):
        expected = noise_and_shift(plain[index]["source"][0], np.random.default_rng([5, 7, index, 1]))
        assert torch.equal(noisy[index]["source"][0], expected)
    both = clips(data_folder, roll=True, noise=True)
    both.set_epoch(7)
    rolled = clips(data_folder, roll=True)
    rolled.set_epoch(7)
    # noise after the roll, from its own stream
    expected = noise_and_shift(rolled[1]["source"][0], np.random.default_rng([5, 7, 1, 1]))
    assert torch.equal(both[1]["source"][0], expected)


def test_augmentations_apply_to_training_splits_only(data_folder):
    labels = read_label_descriptors(data_folder / "label_descriptors.csv")
    kwargs = dict(roll=True, noise=True, seed=5)
    valid = load_labelled_split(str(data_folder), "train", labels, FBANK, training=False, **kwargs)
    train = load_labelled_split(str(data_folder), "train", labels, FBANK, training=True, **kwargs)
    assert not valid.roll and not valid.noise and not valid.varies_by_epoch
    assert train.roll and train.noise and train.varies_by_epoch
    assert torch.equal(valid[0]["source"], clips(data_folder)[0]["source"])


def test_varies_by_epoch_tracks_every_epoch_dependent_choice(data_folder):
    assert not clips(data_folder).varies_by_epoch
    assert clips(data_folder, roll=True).varies_by_epoch
    assert clips(data_folder, roll=True, roll_fbank=True).varies_by_epoch
    assert clips(data_folder, noise=True).varies_by_epoch
    weighted = clips(data_folder)
    weighted.sample_weights = np.ones(len(RATES))
    assert weighted.varies_by_epoch


# ------------------------------------------------------------------ weighted sampling


def weighted(folder: Path, weights, num_samples: int, replacement: bool = False) -> LabelledClips:
    dataset = clips(folder)
    dataset.sample_weights = np.asarray(weights, dtype=np.float64)
    dataset.num_samples = num_samples
    dataset.sample_with_replacement = replacement
    return dataset


def epoch_order(dataset: LabelledClips, epoch: int) -> np.ndarray:
    dataset.set_epoch(epoch)
    return dataset.order()


def test_weighted_sampling_without_replacement_has_no_duplicates_and_is_reproducible(data_folder):
    dataset = weighted(data_folder, [1, 2, 3, 4, 0, 5], num_samples=5)
    for epoch in range(1, 50):
        order = epoch_order(dataset, epoch)
        assert len(order) == 5 and len(set(order.tolist())) == 5
        assert 4 not in order  # weight 0: never drawn
    again = weighted(data_folder, [1, 2, 3, 4, 0, 5], num_samples=5)
    assert np.array_equal(epoch_order(again, 3), epoch_order(dataset, 3))
    assert any(not np.array_equal(epoch_order(dataset, 3), epoch_order(dataset, e)) for e in (4, 5, 6))


def test_weighted_sampling_follows_the_weights(data_folder):
    weights = np.array([1, 2, 3, 4, 0, 10], dtype=np.float64)
    p = weights / weights.sum()
    # one clip per epoch: frequencies are the normalised weights
    single = weighted(data_folder, weights, num_samples=1)
    counts = np.bincount([int(epoch_order(single, e)[0]) for e in range(1, 4001)], minlength=6)
    assert np.abs(counts / 4000 - p).max() < 0.03
    # two clips per epoch: successive draws among the clips left, as torch.multinomial(replacement=False)
    pair = weighted(data_folder, weights, num_samples=2)
    inclusion = np.zeros(6)
    for e in range(1, 4001):
        inclusion[epoch_order(pair, e)] += 1
    expected = np.array([p[i] + sum(p[j] * p[i] / (1 - p[j]) for j in range(6) if j != i) for i in range(6)])
    assert np.abs(inclusion / 4000 - expected).max() < 0.04


def test_weighted_sampling_with_replacement_repeats_clips(data_folder):
    dataset = weighted(data_folder, [1, 1, 1, 1, 0, 1], num_samples=20, replacement=True)
    order = epoch_order(dataset, 1)
    assert len(order) == 20 and len(set(order.tolist())) <= 5 and 4 not in order


def write_weights(folder: Path, weights) -> Path:
    path = folder / f"weights_{len(list(folder.glob('weights_*')))}.csv"
    path.write_text("\n".join(str(w) for w in weights) + "\n")
    return path


def test_too_many_samples_without_replacement_are_refused_naming_the_weights_file(data_folder):
    labels = read_label_descriptors(data_folder / "label_descriptors.csv")
    path = write_weights(data_folder, [1, 0, 2, 0, 0, 1])
    with pytest.raises(ValueError, match=f"task.num_samples=4 .*{path}.* only 3 clips a nonzero weight"):
        load_labelled_split(str(data_folder), "train", labels, FBANK, training=True, weights_file=str(path), num_samples=4)
    ok = load_labelled_split(str(data_folder), "train", labels, FBANK, training=True, weights_file=str(path), num_samples=3)
    assert sorted(ok.order().tolist()) == [0, 2, 5]
    repeated = load_labelled_split(
        str(data_folder), "train", labels, FBANK, training=True, weights_file=str(path), num_samples=4, sample_with_replacement=True
    )
    assert len(repeated.order()) == 4


@pytest.mark.parametrize("weights, message", [([1, -1, 1, 1, 1, 1], "line 2 is -1"), ([0] * 6, "every weight is 0")])
def test_bad_weights_are_refused(data_folder, weights, message):
    labels = read_label_descriptors(data_folder / "label_descriptors.csv")
    path = write_weights(data_folder, weights)
    with pytest.raises(ValueError, match=message):
        load_labelled_split(str(data_folder), "train", labels, FBANK, training=True, weights_file=str(path), num_samples=1)
