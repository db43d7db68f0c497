"""Training-time augmentations for fine-tuning on normalised log-mel inputs, and the policy combining them.

Dimensions: B = clips, T = frames, M = mel bins, C = classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

__all__ = ["mixup", "spec_augment", "random_patch_mask", "AugmentationPolicy"]


def mixup(fbank: torch.Tensor, targets: torch.Tensor, alpha: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Batch mixup with the reversed batch: ``lam * x + (1 - lam) * x.flip(0)``, lam ~ Beta(alpha, alpha).

    Uses the global torch generator, which fairseq reseeds every update.

    Args:
        fbank: (B, 1, T, M); targets: (B, C) multi-hot or one-hot.

    Returns:
        mixed fbank (B, 1, T, M) and mixed targets (B, C).
    """
    if alpha <= 0:
        return fbank, targets
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    mixed = fbank * lam + fbank.flip(0) * (1.0 - lam)
    return mixed, targets * lam + targets.flip(0) * (1.0 - lam)


def spec_augment(
    fbank: torch.Tensor,
    max_freq: int,
    max_time: int,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """One frequency band and one time span per clip set to zero (the normalised mean).

    Widths are uniform in [0, max_freq] bins and [0, max_time] frames.
    """
    b, _, t, m = fbank.shape
    out = fbank.clone()
    for i in range(b):
        for size, max_width, axis in ((m, max_freq, 3), (t, max_time, 2)):
            if max_width <= 0:
                continue
            width = int(torch.randint(0, min(max_width, size) + 1, (1,), generator=generator))
            start = int(torch.randint(0, size - width + 1, (1,), generator=generator))
            if axis == 3:
                out[i, :, :, start : start + width] = 0.0
            else:
                out[i, :, start : start + width, :] = 0.0
    return out


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
    order = torch.rand(clips, patches, generator=generator).argsort(dim=1)
    mask = torch.zeros(clips, patches, dtype=torch.bool)
    mask.scatter_(1, order[:, :drop], True)
    return mask


@dataclass
class AugmentationPolicy:
    """What fine-tuning does to a training batch (each part off at 0).

    Attributes:
        specaug_ratio: SpecAugment widths up to ratio * mel bins and ratio * frames.
        mixup_alpha: mixup Beta(alpha, alpha); mixup_prob: chance that a batch is mixed.
        patch_mask_ratio: fraction of patches dropped from the encoder input.
    """

    specaug_ratio: float = 0.0
    mixup_alpha: float = 0.0
    mixup_prob: float = 1.0
    patch_mask_ratio: float = 0.0
    specaug_before_mixup: bool = False

    def apply(
        self, fbank: torch.Tensor, targets: Optional[torch.Tensor], patches: int
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Augment a training batch.

        Args:
            fbank: (B, 1, T, M); targets: (B, C) or None; patches: L, patches per clip.

        Returns:
            fbank (B, 1, T, M), targets (B, C) (mixed with the inputs under mixup),
            and a patch mask (B, L) bool, True = dropped, or None.
        """
        if self.specaug_ratio > 0:
            fbank = spec_augment(fbank, int(fbank.shape[3] * self.specaug_ratio), int(fbank.shape[2] * self.specaug_ratio))
        if targets is not None and self.mixup_alpha > 0 and float(torch.rand(())) < self.mixup_prob:
            fbank, targets = mixup(fbank, targets, self.mixup_alpha)
        mask = random_patch_mask(fbank.shape[0], patches, self.patch_mask_ratio)
        return fbank, targets, mask.to(fbank.device) if mask is not None else None
