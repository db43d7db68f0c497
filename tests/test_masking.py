import numpy as np
import pytest

from sslam_plugin.masking import inverse_block_mask, mask_rng


def test_every_copy_keeps_exactly_the_target_count():
    masks = inverse_block_mask((64, 8), copies=16, rng=np.random.default_rng(0))
    assert masks.shape == (16, 512) and masks.dtype == bool
    # int(512 * 0.2) = 102 kept, 410 masked, as the official code
    assert (masks.sum(axis=1) == 410).all()
    assert len({m.tobytes() for m in masks}) == 16  # copies differ


@pytest.mark.parametrize("grid", [(32, 8), (16, 8), (4, 8), (3, 3)])
def test_count_holds_for_small_grids(grid):
    masks = inverse_block_mask(grid, copies=4, rng=np.random.default_rng(1))
    length = grid[0] * grid[1]
    assert (masks.sum(axis=1) == length - int(length * (1 - 0.8))).all()


def test_reproducible_from_seed_epoch_index():
    a = inverse_block_mask((64, 8), 4, rng=mask_rng(7, 2, 11))
    b = inverse_block_mask((64, 8), 4, rng=mask_rng(7, 2, 11))
    assert np.array_equal(a, b)
    for other in (mask_rng(7, 3, 11), mask_rng(7, 2, 12), mask_rng(8, 2, 11)):
        assert not np.array_equal(a, inverse_block_mask((64, 8), 4, rng=other))


def test_single_interior_block_is_exactly_a_5x5_square():
    # 10x10 grid, keep 25%: one centre, and an interior block keeps exactly 25
    # patches, so no random trimming happens and the kept set is the square.
    seed = next(
        s
        for s in range(100)
        if all(2 <= v <= 7 for v in divmod(int(np.random.default_rng(s).integers(0, 100, size=1)[0]), 10))
    )
    centre = int(np.random.default_rng(seed).integers(0, 100, size=1)[0])
    r, c = divmod(centre, 10)
    expected = np.ones((10, 10), dtype=bool)
    expected[r - 2 : r + 3, c - 2 : c + 3] = False
    mask = inverse_block_mask((10, 10), 1, mask_ratio=0.75, mask_ratio_adjust=0.0, rng=np.random.default_rng(seed))
    assert np.array_equal(mask[0].reshape(10, 10), expected)


def test_kept_patches_form_blocks():
    masks = inverse_block_mask((64, 8), 32, rng=np.random.default_rng(3))
    kept = ~masks.reshape(32, 64, 8)
    padded = np.pad(kept, ((0, 0), (1, 1), (1, 1)))
    neighbours = padded[:, :-2, 1:-1] | padded[:, 2:, 1:-1] | padded[:, 1:-1, :-2] | padded[:, 1:-1, 2:]
    frac = (neighbours & kept).sum() / kept.sum()
    # uniform random masks of the same ratio give about 1 - 0.8**4 = 0.59
    assert frac > 0.85


def test_rejects_bad_ratio():
    with pytest.raises(ValueError, match="mask_ratio"):
        inverse_block_mask((8, 8), 1, mask_ratio=1.0)
