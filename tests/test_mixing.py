import math
from collections import Counter

import pytest
import torch

from sslam_plugin.mixing import (
    MixingConfig,
    fit_window_rows,
    partial_mix,
    partner_indices,
    sample_unmixed_windows,
    unmixed_frames,
    unmixed_rows,
)


def test_mixture_is_the_clip_in_windows_and_the_max_elsewhere():
    g = torch.Generator().manual_seed(0)
    clips, partners = torch.randn(2, 1, 64, 8, generator=g), torch.randn(2, 1, 64, 8, generator=g)
    windows = torch.tensor([[0, 32]])  # frames 0-15 and 32-47 stay unmixed
    unmixed = unmixed_frames(windows, 16, 64)
    mixed = partial_mix(clips, partners, unmixed)
    for t in range(64):
        inside = t < 16 or 32 <= t < 48
        expected = clips[:, :, t] if inside else torch.maximum(clips[:, :, t], partners[:, :, t])
        assert torch.equal(mixed[:, :, t], expected), t


def test_mean_mixture_averages_mel_power():
    mean, std = -4.0, 2.0
    a, p = torch.full((1, 1, 16, 2), 0.5), torch.full((1, 1, 16, 2), -0.25)
    mixed = partial_mix(a, p, torch.zeros(1, 16, dtype=torch.bool), "mean", mean, std)
    power = (math.exp(0.5 * 4 + mean) + math.exp(-0.25 * 4 + mean)) / 2  # undo (x - mean) / (2 std)
    assert torch.allclose(mixed, torch.full_like(a, (math.log(power) - mean) / 4))
    # a clip mixed with itself by power average is itself
    assert torch.allclose(partial_mix(a, a, torch.zeros(1, 16, dtype=torch.bool), "mean", mean, std), a, atol=1e-6)


def test_per_clip_windows():
    clips, partners = torch.zeros(2, 1, 32, 4), torch.ones(2, 1, 32, 4)
    unmixed = unmixed_frames(torch.tensor([[0], [16]]), 16, 32)
    mixed = partial_mix(clips, partners, unmixed)
    assert mixed[0, 0, :16].eq(0).all() and mixed[0, 0, 16:].eq(1).all()
    assert mixed[1, 0, :16].eq(1).all() and mixed[1, 0, 16:].eq(0).all()


@pytest.mark.parametrize("rows, windows, length", [(64, 2, 15), (16, 2, 4), (32, 3, 5), (8, 1, 7), (10, 2, 5)])
def test_window_sampler_invariants(rows, windows, length):
    for seed in range(200):
        starts = sample_unmixed_windows(rows, windows, length, count=3, generator=torch.Generator().manual_seed(seed))
        assert starts.shape == (3, windows)
        assert (starts >= 0).all() and (starts + length <= rows).all()
        assert (starts[:, 1:] - starts[:, :-1] >= length).all()  # sorted, no overlap
        frames = starts * 16
        covered = unmixed_rows(frames, length * 16, 16, rows)
        assert (covered.sum(dim=1) == windows * length).all()


def test_window_sampler_covers_every_placement():
    seen = {tuple(sample_unmixed_windows(6, 2, 2, generator=torch.Generator().manual_seed(s))[0].tolist()) for s in range(300)}
    assert seen == {(0, 2), (0, 3), (0, 4), (1, 3), (1, 4), (2, 4)}


def test_windows_that_do_not_fit_are_shrunk():
    assert fit_window_rows(64, 2, 15) == 15
    assert fit_window_rows(16, 2, 15) == 7  # 512 frames with 2 x 240: shrink, keep one mixed row
    assert fit_window_rows(4, 2, 15) == 1
    assert fit_window_rows(1, 2, 15) == 0  # nothing can stay unmixed in one row
    with pytest.raises(ValueError, match="do not fit"):
        sample_unmixed_windows(16, 2, 15)


def test_unaligned_windows_are_rejected():
    with pytest.raises(ValueError, match="multiples of the patch size"):
        unmixed_rows(torch.tensor([[8]]), 16, 16, 4)


def test_partners():
    assert partner_indices(4).tolist() == [3, 0, 1, 2]  # clip i with clip i-1
    for seed in range(50):
        perm = partner_indices(5, "derangement", torch.Generator().manual_seed(seed))
        assert sorted(perm.tolist()) == list(range(5))
        assert (perm != torch.arange(5)).all()
    with pytest.raises(ValueError, match="at least 2 clips"):
        partner_indices(1)


def test_config_validation_names_the_key():
    with pytest.raises(ValueError, match="mixing.operation"):
        MixingConfig(operation="sum").validate(16)
    with pytest.raises(ValueError, match="mixing.unmixed_window_frames"):
        MixingConfig(unmixed_window_frames=100).validate(16)


def test_public_window_sampler_follows_the_public_rule_at_the_paper_shape():
    """start1 uniform on frames {0, 16, ..., 496}; start2 uniform on {start1 + 240, ...} below 783."""
    draws = 64000
    starts = sample_unmixed_windows(64, 2, 15, count=draws, generator=torch.Generator().manual_seed(0), sampler="public")
    frames = starts * 16
    first, second = frames[:, 0], frames[:, 1]
    assert set(first.unique().tolist()) == set(range(0, 497, 16))
    for s1 in (0, 256, 496):
        allowed = set(range(s1 + 240, 783, 16))
        assert set(second[first == s1].unique().tolist()) == allowed
    # uniform: chi-square of start1 over its 32 values, and of start2 given start1 = 0 over its 34
    counts = torch.bincount(starts[:, 0], minlength=32).double()
    expected = draws / 32
    assert float(((counts - expected) ** 2 / expected).sum()) < 61.1  # chi2(31) at p = 0.001
    given = starts[starts[:, 0] == 0, 1] - 15
    counts = torch.bincount(given, minlength=34).double()
    expected = given.numel() / 34
    assert float(((counts - expected) ** 2 / expected).sum()) < 63.9  # chi2(33) at p = 0.001
    uniform = sample_unmixed_windows(64, 2, 15, count=draws, generator=torch.Generator().manual_seed(0), sampler="uniform")
    assert (uniform[:, 0] > 31).any()  # the uniform sampler also places the first window late


@pytest.mark.parametrize("rows, length", [(64, 15), (16, 4), (16, 7), (8, 3), (10, 5)])
def test_public_window_sampler_invariants_at_other_shapes(rows, length):
    starts = sample_unmixed_windows(rows, 2, length, count=500, generator=torch.Generator().manual_seed(1), sampler="public")
    assert (starts >= 0).all() and (starts + length <= rows).all()
    assert (starts[:, 1] - starts[:, 0] >= length).all()
    assert (starts[:, 0] < rows // 2).all() or rows - 2 * length < 1


def _chi2_critical(dof: int, z: float = 3.09) -> float:
    """Upper chi-square quantile (Wilson-Hilferty); z = 3.09 is p = 0.001."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def _public_rule_chi2(starts: torch.Tensor) -> tuple:
    """Chi-square of (start1, start2) frame pairs against the public rule's exact joint law at
    1024 frames: start1 uniform on {0, 16, ..., 496}, then start2 uniform on
    {start1 + 240, start1 + 256, ...} below 783. Returns (statistic, degrees of freedom);
    a pair outside the rule's support makes the statistic infinite."""
    frames = (starts * 16).tolist()
    cells = {(s1, s2): 1 / 32 / len(range(s1 + 240, 783, 16)) for s1 in range(0, 497, 16) for s2 in range(s1 + 240, 783, 16)}
    counts = Counter(map(tuple, frames))
    if set(counts) - set(cells):
        return math.inf, len(cells) - 1
    n = len(frames)
    stat = sum((counts.get(cell, 0) - n * p) ** 2 / (n * p) for cell, p in cells.items())
    return stat, len(cells) - 1


def test_public_window_sampler_matches_the_exact_joint_distribution():
    """Both starts together, over all 592 (start1, start2) cells, against the exact law at a fixed
    seed; a sampler with the same support but another law fails the same check."""
    starts = sample_unmixed_windows(64, 2, 15, count=100000, generator=torch.Generator().manual_seed(7), sampler="public")
    stat, dof = _public_rule_chi2(starts)
    assert dof == 591
    assert stat < _chi2_critical(dof), (stat, _chi2_critical(dof))
    # same support, start1 skewed towards early frames: rejected
    g = torch.Generator().manual_seed(7)
    first = torch.minimum(torch.randint(0, 32, (100000,), generator=g), torch.randint(0, 32, (100000,), generator=g))
    second = first + 15 + (torch.rand(100000, generator=g) * (34 - first)).long()
    skewed, _ = _public_rule_chi2(torch.stack([first, second], dim=1))
    assert skewed > 10 * _chi2_critical(dof)
