"""Batch augmentations of fine-tuning against their official definitions (torchaudio SpecAugment, batch mixup)."""

import math

import pytest
import torch
import torchaudio

from sslam_plugin.augment import (
    AugmentationPolicy,
    mask_along_axis_iid,
    mixup,
    random_patch_mask,
    sample_beta,
    spec_augment,
)


def official_spec_augment(x: torch.Tensor, freqm: float, timem: float) -> torch.Tensor:
    """The official ``spectrogram_augment``: torchaudio's transforms on (B, 1, M, T), global generator."""
    spec = x.transpose(2, 3)
    spec = torchaudio.transforms.FrequencyMasking(freqm, iid_masks=True)(spec)
    spec = torchaudio.transforms.TimeMasking(timem, iid_masks=True)(spec)
    return spec.transpose(2, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mask_param, axis", [(25.6, 3), (204.8, 2), (7, -1), (1.5, 2)])
def test_mask_along_axis_iid_equals_torchaudio(dtype, mask_param, axis):
    x = (torch.randn(6, 2, 300, 40) + 10.0).to(dtype)  # (B, C, T, M); two channels: masks differ per channel
    for seed in range(5):
        torch.manual_seed(seed)
        expected = torchaudio.functional.mask_along_axis_iid(x, mask_param, 0.0, axis % 4)
        ours = mask_along_axis_iid(x, mask_param, axis, torch.Generator().manual_seed(seed))
        assert torch.equal(ours, expected)
        torch.manual_seed(seed)  # generator None: torch's global generator, the same draws
        assert torch.equal(mask_along_axis_iid(x, mask_param, axis), expected)


def test_spec_augment_equals_the_official_transforms_seeded_alike():
    x = torch.randn(8, 1, 1024, 128) + 10.0
    ratio = 0.2
    freqm, timem = 128 * ratio, 1024 * ratio  # 25.6 and 204.8, floats as in the official code
    for seed in range(3):
        torch.manual_seed(seed)
        expected = official_spec_augment(x, freqm, timem)
        assert torch.equal(spec_augment(x, freqm, timem, torch.Generator().manual_seed(seed)), expected)
        torch.manual_seed(seed)
        assert torch.equal(AugmentationPolicy(specaug_ratio=ratio).spec_augment(x), expected)
    assert spec_augment(x, 0.5, 0.0) is x  # widths below 1: nothing masked, nothing drawn


def mask_widths(out: torch.Tensor, axis: int) -> torch.Tensor:
    """(B,) widths of the zero span along ``axis`` of (B, 1, T, M) outputs whose input had no zeros."""
    other = 3 if axis == 2 else 2
    zero = (out[:, 0] == 0).all(dim=other - 1)  # (B, size along axis): fully zeroed lines
    return zero.sum(dim=1)


@pytest.mark.parametrize("mask_param, axis", [(25.6, 3), (204.8, 2)])
def test_mask_widths_are_uniform_below_the_parameter_and_filled_with_zero(mask_param, axis):
    shape = (2000, 1, 1024, 8) if axis == 2 else (2000, 1, 8, 128)
    x = torch.rand(shape) + 1.0  # no natural zeros
    out = mask_along_axis_iid(x, mask_param, axis, torch.Generator().manual_seed(0))
    zero = out == 0
    line = zero.all(dim=5 - axis, keepdim=True)  # fully zeroed lines along the masked axis
    assert torch.equal(zero, line.expand_as(zero))  # every zero is in a masked line
    assert torch.equal(out[~zero], x[~zero])  # everything else untouched
    widths = mask_widths(out, axis).double()
    # width = trunc(U * p): below p, and its exact mean is (sum_{k < floor(p)} k + floor(p) * frac(p)) / p
    top = math.floor(mask_param)
    mean = (top * (top - 1) / 2 + top * (mask_param - top)) / mask_param
    assert widths.max() == top < mask_param and widths.min() == 0
    assert abs(float(widths.mean()) - mean) < 0.05 * mask_param  # ~ mask_param / 2
    assert abs(float(widths.mean()) - mask_param / 2) < 0.1 * mask_param


def test_spec_augment_masks_one_band_and_one_span_per_clip():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 50, 16) + 10.0  # no natural zeros
    out = spec_augment(x, 4.0, 10.0, generator=g)
    assert out.shape == x.shape
    for clip, original in zip(out, x):
        zeroed = clip[0] == 0
        bins = zeroed.all(dim=0)  # fully zeroed mel bins
        frames = zeroed.all(dim=1)
        assert bins.sum() < 4 and frames.sum() < 10
        assert torch.equal(zeroed, bins[None, :] | frames[:, None])
        assert torch.equal(clip[0][~zeroed], original[0][~zeroed])


def test_sample_beta_is_torch_distributions_beta_under_the_global_seed():
    # sample_beta uses a private torch sampler so that it can take a generator; it must stay Beta's
    for alpha in (0.5, 0.8, 10.0):
        torch.manual_seed(7)
        expected = float(torch.distributions.Beta(alpha, alpha).sample())
        torch.manual_seed(7)
        assert sample_beta(alpha) == expected
    draws = torch.tensor([sample_beta(0.8, torch.Generator().manual_seed(s)) for s in range(3000)])
    assert abs(float(draws.mean()) - 0.5) < 0.03
    assert abs(float(draws.var()) - 0.25 / (2 * 0.8 + 1)) < 0.01  # alpha^2 / ((2 alpha)^2 (2 alpha + 1))


def test_mixup_is_the_batch_mixed_with_its_reverse():
    x = torch.randn(4, 1, 6, 5)
    y = torch.eye(4)
    g = torch.Generator().manual_seed(3)
    mx, my = mixup(x, y, alpha=0.8, prob=1.0, generator=g)
    replay = torch.Generator().manual_seed(3)
    torch.rand((), generator=replay)  # the per-batch coin, drawn first
    lam = sample_beta(0.8, replay)
    assert torch.equal(mx, x * lam + x.flip(0) * (1 - lam))
    assert torch.equal(my, y * lam + y.flip(0) * (1 - lam))
    assert torch.allclose(my.sum(dim=1), torch.ones(4))
    assert mixup(x, y, alpha=0.0)[0] is x


def test_mixup_global_generator_draws_coin_then_beta():
    x, y = torch.randn(4, 1, 6, 5), torch.eye(4)
    torch.manual_seed(11)
    mx, _ = mixup(x, y, alpha=0.8, prob=0.9)
    torch.manual_seed(11)
    coin = float(torch.rand(()))
    lam = float(torch.distributions.Beta(0.8, 0.8).sample())
    assert coin < 0.9  # this seed mixes
    assert torch.equal(mx, x * lam + x.flip(0) * (1 - lam))


def test_mixup_mixes_a_batch_with_probability_prob():
    x, y = torch.randn(2, 1, 3, 2), torch.eye(2)
    g = torch.Generator().manual_seed(0)
    mixed = sum(mixup(x, y, 0.8, prob=0.3, generator=g)[0] is not x for _ in range(3000))
    assert abs(mixed / 3000 - 0.3) < 0.03


def test_patch_mask_drops_the_same_count_per_clip():
    mask = random_patch_mask(5, 64, 0.2, torch.Generator().manual_seed(0))
    assert mask.shape == (5, 64) and (mask.sum(dim=1) == 12).all()
    assert random_patch_mask(5, 64, 0.0) is None


def test_policy_off_leaves_the_batch_and_on_applies_each_part():
    x = torch.randn(4, 1, 32, 16)
    y = torch.eye(4)
    same_x, same_y, mask = AugmentationPolicy().apply(x, y, patches=8)
    assert torch.equal(same_x, x) and torch.equal(same_y, y) and mask is None
    torch.manual_seed(0)
    aug_x, aug_y, mask = AugmentationPolicy(specaug_ratio=0.5, mixup_alpha=1.0, patch_mask_ratio=0.25).apply(x, y, patches=8)
    assert mask.shape == (4, 8) and (mask.sum(dim=1) == 2).all()
    assert not torch.equal(aug_y, y) and torch.allclose(aug_y.sum(dim=1), torch.ones(4))  # mixed one-hot targets
    assert not torch.equal(aug_x, x)


@pytest.mark.parametrize("specaug_before_mixup", [False, True])
def test_policy_order_official_mixup_then_specaug(specaug_before_mixup):
    policy = AugmentationPolicy(specaug_ratio=0.2, mixup_alpha=0.8, mixup_prob=1.0, specaug_before_mixup=specaug_before_mixup)
    x = torch.randn(6, 1, 100, 128) + 10.0
    y = torch.eye(6)
    out, targets, mask = policy.apply(x, y, patches=10, generator=torch.Generator().manual_seed(4))
    assert mask is None
    g = torch.Generator().manual_seed(4)
    if specaug_before_mixup:
        expected, expected_y = mixup(spec_augment(x, 0.2 * 128, 0.2 * 100, g), y, 0.8, 1.0, g)
    else:
        mixed, expected_y = mixup(x, y, 0.8, 1.0, g)
        expected = spec_augment(mixed, 0.2 * 128, 0.2 * 100, g)
    assert torch.equal(out, expected) and torch.equal(targets, expected_y)
    if not specaug_before_mixup:  # official order: the masks stay exactly 0 (not mixed with the reversed clip)
        assert (out[:, 0] == 0).all(dim=1).sum() > 0 and (out[:, 0] == 0).all(dim=2).sum() > 0


def test_policy_without_targets_only_masks():
    policy = AugmentationPolicy(specaug_ratio=0.2, mixup_alpha=0.8)
    x = torch.randn(2, 1, 100, 128) + 10.0
    out, targets, _ = policy.apply(x, None, patches=10, generator=torch.Generator().manual_seed(0))
    assert targets is None
    assert torch.equal(out, spec_augment(x, 0.2 * 128, 0.2 * 100, torch.Generator().manual_seed(0)))
