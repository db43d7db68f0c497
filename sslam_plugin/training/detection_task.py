"""The registered sound event detection task: a detection data folder for frame-level training.

The folder's layout and the dataset are :mod:`sslam_plugin.detection.data_folder` and
:mod:`sslam_plugin.detection.dataset`; this module wires them to fairseq.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
from fairseq.data import FairseqDataset
from fairseq.tasks import register_task
from omegaconf import MISSING, OmegaConf, open_dict

from ..data import read_label_descriptors
from ..data.workers import worker_init_fn
from ..detection.dataset import DetectionClips, load_detection_split
from ..detection.targets import FrameGrid
from ..features import FbankSettings
from .launch_options import LaunchOptions
from .task import FbankTask, RelaunchOptions

logger = logging.getLogger(__name__)

__all__ = ["DetectionTaskConfig", "SSLAMDetectionTask"]


class DetectionFbankDataset(FairseqDataset):
    """:class:`~sslam_plugin.detection.dataset.DetectionClips` as a fairseq dataset."""

    def __init__(self, clips: DetectionClips):
        super().__init__()
        self.clips = clips

    worker_init_fn = staticmethod(worker_init_fn)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> Dict[str, object]:
        return self.clips[index]

    def collater(self, samples: List[Dict[str, object]]) -> Dict[str, object]:
        return self.clips.collate(samples)

    def num_tokens(self, index: int) -> int:
        return 1

    def size(self, index: int) -> int:
        return 1

    def ordered_indices(self) -> np.ndarray:
        return np.arange(len(self))


@dataclass
class DetectionTaskConfig(RelaunchOptions, LaunchOptions, FbankSettings):
    # the front end's task.* settings come from FbankSettings, task.effective_batch_size from LaunchOptions
    data: str = field(
        default=MISSING,
        metadata={"help": "folder with {split}.tsv, {split}_strong.tsv, optional {split}.lbl, label_descriptors.csv"},
    )
    hop: float = field(
        default=0.04,
        metadata={"help": "output frame hop in seconds; one 160 ms patch row must be a whole number of hops"},
    )
    seed: int = field(default=1, metadata={"help": "seed of clip substitution"})


@register_task("sslam_detection", dataclass=DetectionTaskConfig)
class SSLAMDetectionTask(FbankTask):
    cfg: DetectionTaskConfig

    def __init__(self, cfg: DetectionTaskConfig, labels):
        super().__init__(cfg)
        self.labels = labels
        self.grid = FrameGrid(window_frames=cfg.target_length, hop=cfg.hop)

    @classmethod
    def setup_task(cls, cfg: DetectionTaskConfig, **kwargs) -> "SSLAMDetectionTask":
        cls.resolve_data_folder(cfg)
        try:
            FrameGrid(window_frames=cfg.target_length, hop=cfg.hop)
        except ValueError as err:
            raise ValueError(f"task.hop / task.target_length: {err}") from None
        labels = read_label_descriptors(os.path.join(cfg.data, "label_descriptors.csv"))
        logger.info("%d classes; frames of %g s (%d per 160 ms patch row)", len(labels), cfg.hop, round(0.16 / cfg.hop))
        return cls(cfg, labels)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def load_dataset(self, split: str, **kwargs) -> None:
        training = split == "train"
        clips = load_detection_split(self.cfg.data, split, self.labels, self.fbank_config(), self.grid,
                                     training=training, seed=self.cfg.seed)
        self.datasets[split] = DetectionFbankDataset(clips)

    def build_model(self, cfg, from_checkpoint: bool = False):
        model = super().build_model(cfg, from_checkpoint)
        # the run's config, saved in every checkpoint, records the encoder the model really has
        # (model_path's), so that sslam-detect rebuilds it from the checkpoint alone
        detector = getattr(model, "detector", None)
        if detector is not None and OmegaConf.is_config(cfg):
            with open_dict(cfg):
                cfg.encoder = OmegaConf.structured(detector.encoder.cfg)
        return model

    def state_dict(self) -> Dict[str, object]:
        # saved in every checkpoint: detection reports label names
        return {"label_ids": list(self.labels.ids), "label_names": list(self.labels.names)}

    def load_state_dict(self, state_dict) -> None:
        saved = state_dict.get("label_ids")
        if saved is not None and list(saved) != list(self.labels.ids):
            raise ValueError(
                f"the checkpoint was trained for other classes than {self.cfg.data}/label_descriptors.csv "
                "(or in another order); use that run's label_descriptors.csv"
            )
