"""Training-time augmentations for fine-tuning on normalised log-mel inputs, and the policy combining them.

They follow the official EAT/SSLAM fine-tuning (``EAT_audio_classification.py``):
batch mixup with the reversed batch, then torchaudio's iid SpecAugment
(``FrequencyMasking`` then ``TimeMasking``, ``iid_masks=True``). Every function
draws from an optional ``torch.Generator``; with None it uses torch's global
generator, which fairseq reseeds every update, so a resumed run draws the same.

The per-clip augmentations of the official dataset (``raw_audio_dataset.py``),
waveform roll and gain, fbank noise and shift, draw from a numpy Generator that
the dataset seeds from (seed, epoch, clip index).

Dimensions: B = clips, C = channels (1), T = frames, M = mel bins, K = classes, L = patches, N = samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import torch

__all__ = [
    "roll_and_scale",
    "RollAndScale",
    "roll_frames",
    "noise_and_shift",
    "mixup",
    "sample_beta",
    "mask_along_axis_iid",
    "spec_augment",
    "random_patch_mask",
    "AugmentationPolicy",
]


def roll_and_scale(waveform: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The official roll augmentation: a circular shift by k ~ U{0..N-1}, times g ~ Beta(10, 10) + 0.5.

    Drawn in that order (k, then g), as the official ``_roll_mag_aug``; g has
    mean 1 and lies in [0.5, 1.5].

    Args:
        waveform: (N,) zero-mean 16 kHz waveform.

    Returns:
        (N,) ``roll(waveform, k) * g`` in the input's dtype.
    """
    if waveform.dim() != 1 or waveform.numel() == 0:
        raise ValueError(f"expected a non-empty (samples,) waveform, got {tuple(waveform.shape)}")
    shift = int(rng.integers(waveform.numel()))
    gain = float(rng.beta(10.0, 10.0)) + 0.5
    return torch.roll(waveform, shift) * gain


class RollAndScale:
    """:func:`roll_and_scale` as a waveform transform whose draws can be made from the clip's length alone.

    ``make_rng`` gives a fresh Generator for each clip read, so a substitute clip read after a failure
    gets the same draws. Knowing the shift before reading lets a long clip be read only where the crop
    looks (:mod:`sslam_plugin.data.rolled_crop`); calling the object on a whole waveform is
    :func:`roll_and_scale` with the same draws.
    """

    def __init__(self, make_rng: Callable[[], np.random.Generator]):
        self.make_rng = make_rng

    def draw(self, num_samples: int) -> Tuple[int, float]:
        """(shift, gain) for a waveform of ``num_samples`` samples, drawn as :func:`roll_and_scale` does."""
        rng = self.make_rng()
        shift = int(rng.integers(num_samples))
        return shift, float(rng.beta(10.0, 10.0)) + 0.5

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        return roll_and_scale(waveform, self.make_rng())


def roll_frames(fbank: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A circular shift of the frames by k ~ U{0..T-1}, no gain (``task.roll_fbank``, not official).

    Args:
        fbank: (T, M).

    Returns:
        (T, M).
    """
    return torch.roll(fbank, int(rng.integers(0, fbank.shape[0])), dims=0)


def noise_and_shift(fbank: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The official ``task.noise``: ``x + U[0,1)^(T x M) * u / 10``, u ~ U[0, 1), then a roll by s ~ U{-10..9} frames.

    Drawn in the official order: the noise image, u, s.

    Args:
        fbank: (T, M) normalised log-mel.

    Returns:
        (T, M).
    """
    if fbank.dim() != 2:
        raise ValueError(f"expected (frames, mels), got {tuple(fbank.shape)}")
    noise = torch.from_numpy(rng.random(tuple(fbank.shape), dtype=np.float32)).to(fbank)  # (T, M)
    level = float(rng.random())
    shift = int(rng.integers(-10, 10))
    return torch.roll(fbank + noise * level / 10, shift, dims=0)


def _rand(shape: Tuple[int, ...], like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """U[0, 1) of ``like``'s dtype on ``like``'s device.

    With a generator the numbers are drawn on the generator's device (torch
    needs both on one device) and moved; without one, on ``like``'s device from
    its global generator, as torchaudio draws.
    """
    if generator is None:
        return torch.rand(shape, dtype=like.dtype, device=like.device)
    return torch.rand(shape, dtype=like.dtype, device=generator.device, generator=generator).to(like.device)


def sample_beta(alpha: float, generator: Optional[torch.Generator] = None) -> float:
    """One draw of Beta(alpha, alpha).

    ``torch.distributions.Beta`` cannot take a generator; it samples a
    two-component Dirichlet, which torch exposes with a ``generator`` argument.
    With None this is the same draw as ``Beta(alpha, alpha).sample()`` (tested),
    so runs seeded before this function existed draw the same lam.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    concentration = torch.tensor([alpha, alpha], dtype=torch.float32, device=device)
    return float(torch._sample_dirichlet(concentration, generator=generator)[0])


def mixup(
    fbank: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    prob: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Batch mixup with the reversed batch (official ``Mixup``, ``mode="batch"``, no cutmix).

    With probability ``prob`` (one U[0, 1) draw per batch, ``< prob`` mixes),
    ``x = lam * x + (1 - lam) * x.flip(0)`` and the same for the targets, with
    one lam ~ Beta(alpha, alpha) for the whole batch.

    Args:
        fbank: (B, C, T, M); targets: (B, K) multi-hot or one-hot.

    Returns:
        fbank (B, C, T, M) and targets (B, K), mixed or the inputs themselves.
    """
    if alpha <= 0:
        return fbank, targets
    if fbank.shape[0] != targets.shape[0]:
        raise ValueError(f"mixup needs one target row per clip, got fbank {tuple(fbank.shape)} and targets {tuple(targets.shape)}")
    device = generator.device if generator is not None else torch.device("cpu")
    if float(torch.rand((), device=device, generator=generator)) >= prob:
        return fbank, targets
    lam = sample_beta(alpha, generator)
    mixed = fbank * lam + fbank.flip(0) * (1.0 - lam)
    return mixed, targets * lam + targets.flip(0) * (1.0 - lam)


def mask_along_axis_iid(
    specgrams: torch.Tensor,
    mask_param: float,
    axis: int,
    generator: Optional[torch.Generator] = None,
    mask_value: float = 0.0,
) -> torch.Tensor:
    """One random span along ``axis`` per clip and channel set to ``mask_value``.

    The definition of ``torchaudio.functional.mask_along_axis_iid`` (p = 1):
    for every index of the leading dimensions, width = U[0, 1) * mask_param,
    start = U[0, 1) * (size - width), both drawn in the input's dtype, all the
    widths first; masked are ``trunc(start) <= i < trunc(start) + trunc(width)``.
    So widths are below ``mask_param``, and a float ``mask_param`` (25.6) keeps
    its fraction. Seeded alike, the result equals torchaudio's (tested).

    Args:
        specgrams: (..., A, B) with at least 3 dimensions, e.g. (B, C, T, M).
        mask_param: the largest width (exclusive); below 1 nothing is masked and nothing drawn.
        axis: one of the last two dimensions (negative allowed).

    Returns:
        a new tensor of the input's shape.
    """
    dim = specgrams.dim()
    if dim < 3:
        raise ValueError(f"expected (..., A, B) with at least 3 dimensions, got {tuple(specgrams.shape)}")
    axis = axis % dim
    if axis not in (dim - 2, dim - 1):
        raise ValueError(f"axis must be one of the last two dimensions ({dim - 2} or {dim - 1}), got {axis}")
    if mask_param < 1:
        return specgrams
    lead = tuple(specgrams.shape[:-2])
    size = specgrams.shape[axis]
    width = _rand(lead, specgrams, generator) * mask_param  # (...,)
    start = _rand(lead, specgrams, generator) * (size - width)  # (...,)
    first = start.long()
    end = first + width.long()  # truncated separately, as torchaudio does
    positions = torch.arange(size, device=specgrams.device)
    inside = (positions >= first[..., None]) & (positions < end[..., None])  # (..., size)
    # broadcast over the other of the last two axes
    inside = inside[..., :, None] if axis == dim - 2 else inside[..., None, :]
    return specgrams.masked_fill(inside, mask_value)


def spec_augment(
    fbank: torch.Tensor,
    freq_mask_param: float,
    time_mask_param: float,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """SpecAugment as the official fine-tuning applies it: one mel band, then one time span, per clip.

    ``FrequencyMasking(freq_mask_param, iid_masks=True)`` then
    ``TimeMasking(time_mask_param, iid_masks=True)`` with 0.0 (the normalised
    mean) as the fill; widths uniform in [0, param) (:func:`mask_along_axis_iid`).

    Args:
        fbank: (B, C, T, M).

    Returns:
        (B, C, T, M).
    """
    if fbank.dim() != 4:
        raise ValueError(f"expected (batch, channels, frames, mels), got {tuple(fbank.shape)}")
    out = mask_along_axis_iid(fbank, freq_mask_param, axis=3, generator=generator)
    return mask_along_axis_iid(out, time_mask_param, axis=2, generator=generator)


def random_patch_mask(
    clips: int, patches: int, ratio: float, generator: Optional[torch.Generator] = None
) -> Optional[torch.Tensor]:
    """Drop the same number of random patches from every clip (encoder input masking).

    Returns:
        (clips, patches) bool, True = dropped; None when ``ratio`` is 0.
    """
    drop = int(patches * ratio)
    if drop <= 0:
        return None
    device = generator.device if generator is not None else torch.device("cpu")
    order = torch.rand(clips, patches, device=device, generator=generator).argsort(dim=1)
    mask = torch.zeros(clips, patches, dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :drop], True)
    return mask


@dataclass
class AugmentationPolicy:
    """What fine-tuning does to a training batch (each part off at 0).

    Attributes:
        specaug_ratio: SpecAugment widths below ratio * mel bins and ratio * frames
            (official: 128 * mask_ratio and target_length * mask_ratio, floats).
        mixup_alpha: mixup Beta(alpha, alpha); mixup_prob: chance that a batch is mixed.
        patch_mask_ratio: fraction of patches dropped from the encoder input (not official).
        specaug_before_mixup: SpecAugment before mixup (this project's earlier order);
            official and default: mixup first, so the masks are not mixed away.
    """

    specaug_ratio: float = 0.0
    mixup_alpha: float = 0.0
    mixup_prob: float = 1.0
    patch_mask_ratio: float = 0.0
    specaug_before_mixup: bool = False

    def spec_augment(self, fbank: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """SpecAugment of a (B, C, T, M) batch with this policy's widths; the input itself when off."""
        if self.specaug_ratio <= 0:
            return fbank
        # ratio * M and ratio * T as floats: torchaudio keeps the fraction of the width
        return spec_augment(fbank, self.specaug_ratio * fbank.shape[3], self.specaug_ratio * fbank.shape[2], generator)

    def apply(
        self,
        fbank: torch.Tensor,
        targets: Optional[torch.Tensor],
        patches: int,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Augment a training batch: mixup (when there are targets), SpecAugment, patch mask.

        Args:
            fbank: (B, 1, T, M); targets: (B, K) or None; patches: L, patches per clip.
            generator: the random source; None = torch's global generator.

        Returns:
            fbank (B, 1, T, M), targets (B, K) (mixed with the inputs under mixup),
            and a patch mask (B, L) bool, True = dropped, or None.
        """
        if self.specaug_before_mixup:
            fbank = self.spec_augment(fbank, generator)
        if targets is not None:
            fbank, targets = mixup(fbank, targets, self.mixup_alpha, self.mixup_prob, generator)
        if not self.specaug_before_mixup:
            fbank = self.spec_augment(fbank, generator)
        mask = random_patch_mask(fbank.shape[0], patches, self.patch_mask_ratio, generator)
        return fbank, targets, mask.to(fbank.device) if mask is not None else None
