"""Labelled clips for fine-tuning and evaluation: a split's manifest, its labels and the front end.

A data folder holds ``{split}.tsv`` (fairseq audio manifest), ``{split}.lbl``
(``clip_id<TAB>label1,label2``) and ``label_descriptors.csv``
(``index,label_id,display_name``). Optional per-clip sampling weights (one
float per line, in ``train.tsv`` order) draw ``num_samples`` clips per epoch.
No fairseq needed: ``sslam_plugin.training`` wraps :class:`LabelledClips` for fairseq.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional

import numpy as np
import torch

from ..features import FbankConfig
from .labels import LabelSet, labels_for_files, multi_hot, read_clip_labels
from .manifest import read_manifest
from .robust import RobustClipReader, preflight_check

__all__ = ["LabelledClips", "load_labelled_split"]

logger = logging.getLogger(__name__)


class LabelledClips(torch.utils.data.Dataset):
    """Items: ``source`` (1, T, M) features and ``target`` (C,) multi-hot labels.

    Unreadable clips never stop a run (``sslam_plugin.data.robust``): in
    training another clip is used with its own labels; in validation the clip
    is scored as silence with its labels kept, so the split stays the same.
    """

    def __init__(
        self,
        manifest,
        labels: List[List[int]],
        num_classes: int,
        fbank: FbankConfig,
        training: bool,
        roll: bool = False,
        seed: int = 1,
    ):
        super().__init__()
        self.labels = labels
        self.num_classes = num_classes
        self.roll = roll
        self.seed = seed
        self.epoch = 1
        self.sample_weights: Optional[np.ndarray] = None
        self.num_samples = 0
        self.reader = RobustClipReader(manifest, fbank, seed=seed, policy="substitute" if training else "silence")

    def __len__(self) -> int:
        return len(self.reader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> Dict[str, object]:
        read = self.reader.read(index)
        fbank = read.features  # (T, M)
        if self.roll:  # a circular time shift, reproducible from (seed, epoch, index)
            shift = np.random.default_rng([self.seed, self.epoch, index]).integers(0, fbank.shape[0])
            fbank = torch.roll(fbank, int(shift), dims=0)
        return {
            "id": index,
            "source": fbank.unsqueeze(0),
            "target": multi_hot(self.labels[read.index], self.num_classes),
        }

    def collate(self, samples: List[Dict[str, object]]) -> Dict[str, object]:
        if not samples:
            return {}
        return {
            "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
            "net_input": {"source": torch.stack([s["source"] for s in samples])},  # (B, 1, T, M)
            "target": torch.stack([s["target"] for s in samples]),  # (B, C)
        }

    def order(self) -> np.ndarray:
        """This epoch's clips: all, in order, or ``num_samples`` drawn by ``sample_weights``."""
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.sample_weights is None:
            return np.arange(len(self))
        p = self.sample_weights / self.sample_weights.sum()
        return rng.choice(len(self), size=self.num_samples, replace=True, p=p)


def load_labelled_split(
    folder: str,
    split: str,
    labels: LabelSet,
    fbank: FbankConfig,
    multilabel: bool = True,
    training: bool = False,
    roll: bool = False,
    seed: int = 1,
    weights_file: Optional[str] = None,
    num_samples: int = 0,
) -> LabelledClips:
    """``{folder}/{split}.tsv`` with the labels of ``{split}.lbl``, checked before use.

    Args:
        training: unreadable clips are replaced by others (else scored as silence).
        roll: random circular time shift (training only).
        weights_file: per-clip sampling weights; ``num_samples`` clips are drawn per epoch.
    """
    manifest_path = os.path.join(folder, f"{split}.tsv")
    manifest = read_manifest(manifest_path)
    lbl_path = os.path.join(folder, f"{split}.lbl")
    clip_labels = labels_for_files(manifest.files, read_clip_labels(lbl_path, labels), lbl_path)
    if not multilabel and any(len(lab) != 1 for lab in clip_labels):
        raise ValueError(f"{lbl_path}: task.multilabel=false needs exactly one label per clip")
    preflight_check(manifest, fbank)
    dataset = LabelledClips(manifest, clip_labels, len(labels), fbank, training, roll and training, seed)
    if weights_file:
        weights = np.loadtxt(weights_file, dtype=np.float64, ndmin=1)
        if len(weights) != len(manifest):
            raise ValueError(f"{weights_file} has {len(weights)} weights for {len(manifest)} clips in {manifest_path}")
        dataset.sample_weights, dataset.num_samples = weights, num_samples
    logger.info("%s: %d labelled clips", split, len(manifest))
    return dataset
