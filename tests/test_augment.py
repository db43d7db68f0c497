import torch

from sslam_plugin.augment import mixup, random_patch_mask, spec_augment


def test_mixup_mixes_inputs_and_targets_with_the_same_weight():
    torch.manual_seed(0)
    x = torch.stack([torch.zeros(1, 4, 2), torch.ones(1, 4, 2)])  # (2, 1, 4, 2)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mx, my = mixup(x, y, alpha=0.8)
    assert mx.shape == x.shape and my.shape == y.shape
    lam = 1.0 - float(mx[0, 0, 0, 0])  # clip 0 = lam * 0 + (1 - lam) * 1
    assert 0.0 <= lam <= 1.0
    assert torch.allclose(my[0], torch.tensor([lam, 1 - lam]))
    assert torch.allclose(my.sum(dim=1), torch.ones(2))
    assert mixup(x, y, alpha=0.0)[0] is x


def test_spec_augment_zeroes_one_band_and_one_span():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 50, 16) + 10.0  # no natural zeros
    out = spec_augment(x, max_freq=4, max_time=10, generator=g)
    assert out.shape == x.shape
    for clip, original in zip(out, x):
        zeroed = clip[0] == 0
        bins = zeroed.all(dim=0)  # fully zeroed frequency bins
        frames = zeroed.all(dim=1)
        assert bins.sum() <= 4 and frames.sum() <= 10
        # every zero lies in the masked band or span; everything else is untouched
        assert torch.equal(zeroed, bins[None, :] | frames[:, None])
        assert torch.equal(clip[0][~zeroed], original[0][~zeroed])
    assert torch.equal(spec_augment(x, 0, 0), x)


def test_patch_mask_drops_the_same_count_per_clip():
    mask = random_patch_mask(5, 64, 0.2, torch.Generator().manual_seed(0))
    assert mask.shape == (5, 64) and (mask.sum(dim=1) == 12).all()
    assert random_patch_mask(5, 64, 0.0) is None




def test_policy_off_leaves_the_batch_and_on_applies_each_part():
    from sslam_plugin.augment import AugmentationPolicy

    x = torch.randn(4, 1, 32, 16)
    y = torch.eye(4)
    same_x, same_y, mask = AugmentationPolicy().apply(x, y, patches=8)
    assert torch.equal(same_x, x) and torch.equal(same_y, y) and mask is None
    torch.manual_seed(0)
    aug_x, aug_y, mask = AugmentationPolicy(specaug_ratio=0.5, mixup_alpha=1.0, patch_mask_ratio=0.25).apply(x, y, patches=8)
    assert mask.shape == (4, 8) and (mask.sum(dim=1) == 2).all()
    assert not torch.equal(aug_y, y) and torch.allclose(aug_y.sum(dim=1), torch.ones(4))  # mixed one-hot targets
    assert not torch.equal(aug_x, x)
