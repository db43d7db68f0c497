"""fairseq dataset: manifest clips -> normalised fbank images plus inverse block masks."""

from __future__ import annotations

import logging
from typing import Dict, List

import numpy as np
import torch
from fairseq.data import FairseqDataset

from ..data.manifest import Manifest
from ..data.robust import ClipFailure, RobustClipReader
from ..data.workers import worker_init_fn
from ..features import FbankConfig
from ..masking import inverse_block_mask, mask_rng
from ..randomness import batch_seed

logger = logging.getLogger(__name__)

__all__ = ["FbankMaskDataset"]


class FbankMaskDataset(FairseqDataset):
    """Each item: ``source`` (1, T, M) features and ``mask`` (clone_batch, L) bool, True = masked.

    Masks depend only on (seed, epoch, index). A clip that cannot be used
    (missing, corrupt, empty, NaN/Inf, too short) is replaced by another clip
    chosen from (seed, index) (see :mod:`sslam_plugin.data.robust`); the item's
    ``failed`` list records what failed, and the collated batch carries them as
    ``failed_clips`` for the task to count and list (DataLoader workers cannot
    report otherwise). The batch also carries ``batch_seed``, from (seed,
    epoch, its clip indices), from which the model seeds its per-batch draws
    (mixing partners and windows, decoder noise).
    """

    def __init__(
        self,
        manifest: Manifest,
        fbank: FbankConfig,
        patch_size: int,
        clone_batch: int,
        mask_ratio: float,
        mask_ratio_adjust: float,
        mask_block_size: int,
        seed: int,
        max_substitutions: int = 20,
    ):
        super().__init__()
        if fbank.target_length % patch_size or fbank.num_mel_bins % patch_size:
            raise ValueError(
                f"task.target_length ({fbank.target_length}) and the mel bins ({fbank.num_mel_bins}) "
                f"must be multiples of the patch size ({patch_size})"
            )
        self.manifest = manifest
        self.fbank = fbank
        self.grid = (fbank.target_length // patch_size, fbank.num_mel_bins // patch_size)
        self.clone_batch = clone_batch
        self.mask_ratio = mask_ratio
        self.mask_ratio_adjust = mask_ratio_adjust
        self.mask_block_size = mask_block_size
        self.seed = seed
        self.epoch = 1
        self.reader = RobustClipReader(manifest, fbank, max_substitutions=max_substitutions, seed=seed)

    @property
    def max_substitutions(self) -> int:
        return self.reader.max_substitutions

    @property
    def failed(self) -> List[str]:
        """Paths that failed in this process (the main process only when num_workers > 0)."""
        return [f.path for f in self.reader.known_bad.values()]

    def __len__(self) -> int:
        return len(self.manifest)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return False  # masks and order change every epoch

    def features(self, index: int) -> torch.Tensor:
        """(1, T, M) features of clip ``index``; raises AudioLoadError."""
        return self.reader.features(index).unsqueeze(0)

    # fairseq's iterator passes this to its DataLoader: workers keep their freed buffers
    worker_init_fn = staticmethod(worker_init_fn)

    def __getitem__(self, index: int) -> Dict[str, object]:
        clip = self.reader.read(index)
        mask = inverse_block_mask(
            self.grid,
            self.clone_batch,
            self.mask_ratio,
            self.mask_ratio_adjust,
            self.mask_block_size,
            rng=mask_rng(self.seed, self.epoch, index),
        )
        return {
            "id": index,
            "source": clip.features.unsqueeze(0),  # (T, M) -> (1, T, M)
            "mask": torch.from_numpy(mask),
            "failed": clip.failures,
        }

    def collater(self, samples: List[Dict[str, object]]) -> Dict[str, object]:
        if not samples:
            return {}
        failed: List[ClipFailure] = [f for s in samples for f in s.get("failed", ())]
        ids = [int(s["id"]) for s in samples]
        return {
            "id": torch.tensor(ids, dtype=torch.long),
            "net_input": {
                "source": torch.stack([s["source"] for s in samples]),  # (B, 1, T, M)
                "mask": torch.cat([s["mask"] for s in samples]),  # (B * C, L), copies of a clip adjacent
                "batch_seed": batch_seed(self.seed, self.epoch, ids),
            },
            "failed_clips": failed,  # clips substituted in this batch, possibly in a DataLoader worker
        }

    def num_tokens(self, index: int) -> int:
        return 1  # every clip becomes the same fixed-size image

    def size(self, index: int) -> int:
        return 1

    def ordered_indices(self) -> np.ndarray:
        # A fresh permutation each epoch, reproducible from (seed, epoch).
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self))
