"""Clips of a detection data folder as training items: fbank, frame targets, clip targets.

Each item is one window of ``target_length`` frames from the clip's start (as the classification
data: longer clips are cropped, shorter ones zero-padded); the frame targets cover that window at
the grid's hop (:mod:`.targets`). Strong clips train the frame loss, weak clips the pooled clip
loss; unlabelled clips are left out (no loss here uses them). No fairseq needed.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Dict, List

import numpy as np
import torch

from ..data.labels import LabelSet
from ..data.robust import RobustClipReader, preflight_check
from ..data.row_tables import IntListTable, StringTable
from ..features import FbankConfig
from .data_folder import read_detection_split
from .targets import FrameGrid, clip_target, frame_targets, window_events

__all__ = ["DetectionClips", "load_detection_split"]

logger = logging.getLogger(__name__)


class DetectionClips(torch.utils.data.Dataset):
    """Items: ``source`` (1, T, M), ``frame_target`` (F, C), ``clip_target`` (C,), ``strong`` (bool).

    Unreadable clips: in training replaced by another clip (with its own labels); in evaluation
    scored as silence with their labels kept (:mod:`sslam_plugin.data.robust`).
    """

    def __init__(self, split: Dict[str, object], labels: LabelSet, fbank: FbankConfig, grid: FrameGrid,
                 training: bool, seed: int = 1):
        super().__init__()
        keep = [i for i, kind in enumerate(split["kinds"]) if kind != "unlabelled"]
        manifest = split["manifest"]
        if len(keep) < len(manifest):
            logger.info("%s: %d unlabelled clips left out (no loss uses them)", manifest.path, len(manifest) - len(keep))
        # packed, not a Python object per clip: DataLoader workers share these instead of copying them
        self.manifest = replace(manifest, files=manifest.files.take(keep), num_samples=manifest.num_samples[keep])
        self.clip_ids = StringTable.from_strings(split["clip_ids"][i] for i in keep)
        self.strong = np.array([split["kinds"][i] == "strong" for i in keep], dtype=bool)
        self.events = {row: split["events"][i] for row, i in enumerate(keep) if self.strong[row]}  # strong clips only
        self.labels = labels
        self.index = labels.index()
        self.label_ids = labels.ids
        self.weak = IntListTable.from_lists([self.index[label] for label in split["weak"][i]] for i in keep)
        self.grid = grid
        self.reader = RobustClipReader(self.manifest, fbank, seed=seed, policy="substitute" if training else "silence")

    def __len__(self) -> int:
        return len(self.manifest)

    def set_epoch(self, epoch: int) -> None:
        pass  # items do not depend on the epoch

    def __getitem__(self, index: int) -> Dict[str, object]:
        read = self.reader.read(index)
        i = read.index  # a substitute clip brings its own labels
        grid = self.grid
        if self.strong[i]:
            events = window_events(self.events[i], self.index, 0.0, grid.window_seconds)
            target = frame_targets(events, grid.num_frames, grid.hop, len(self.labels))
            labels = sorted({e.label for e in self.events[i]})
        else:
            target = torch.zeros(grid.num_frames, len(self.labels))
            labels = [self.label_ids[k] for k in self.weak.row(i)]
        return {
            "id": index,
            "source": read.features.unsqueeze(0),  # (T, M) -> (1, T, M)
            "frame_target": target,
            "clip_target": clip_target(labels, self.index),
            "strong": bool(self.strong[i]),
        }

    @staticmethod
    def collate(samples: List[Dict[str, object]]) -> Dict[str, object]:
        if not samples:
            return {}
        return {
            "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
            "net_input": {"source": torch.stack([s["source"] for s in samples])},  # (B, 1, T, M)
            "frame_target": torch.stack([s["frame_target"] for s in samples]),  # (B, F, C)
            "clip_target": torch.stack([s["clip_target"] for s in samples]),  # (B, C)
            "strong": torch.tensor([s["strong"] for s in samples], dtype=torch.bool),  # (B,)
        }


def load_detection_split(folder: str, split: str, labels: LabelSet, fbank: FbankConfig, grid: FrameGrid,
                         training: bool = False, seed: int = 1) -> DetectionClips:
    """``{folder}/{split}.tsv`` with its strong (and weak) labels, checked before use."""
    data = read_detection_split(folder, split, labels)
    if not any(kind != "unlabelled" for kind in data["kinds"]):
        raise ValueError(f"{folder}/{split}.tsv: no clip has strong or weak labels")
    preflight_check(data["manifest"], fbank)
    dataset = DetectionClips(data, labels, fbank, grid, training, seed)
    strong = int(dataset.strong.sum())
    logger.info("%s: %d clips (%d strong, %d weak)", split, len(dataset), strong, len(dataset) - strong)
    return dataset
