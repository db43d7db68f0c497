"""The registered classification task: labelled manifests for fine-tuning and linear evaluation.

The data folder's layout and the dataset are :mod:`sslam_plugin.data.labelled`;
this module wires them to fairseq and checks the label order of resumed runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from fairseq.data import FairseqDataset
from fairseq.tasks import register_task
from omegaconf import MISSING, OmegaConf, open_dict

from ..data import LabelSet, read_label_descriptors
from ..data.labelled import LabelledClips, load_labelled_split
from ..data.workers import worker_init_fn
from ..features import FbankSettings
from .resume import resolve_launch_path
from .launch_options import LaunchOptions
from .task import FbankTask, RelaunchOptions

logger = logging.getLogger(__name__)

__all__ = ["ClassificationTaskConfig", "SSLAMClassificationTask", "LabelledFbankDataset"]


class LabelledFbankDataset(FairseqDataset):
    """:class:`~sslam_plugin.data.labelled.LabelledClips` as a fairseq dataset."""

    def __init__(self, clips: LabelledClips):
        super().__init__()
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    # fairseq's iterator passes this to its DataLoader: workers keep their freed buffers
    worker_init_fn = staticmethod(worker_init_fn)

    def __getitem__(self, index: int) -> Dict[str, object]:
        return self.clips[index]

    def set_epoch(self, epoch: int) -> None:
        self.clips.set_epoch(epoch)

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return not self.clips.varies_by_epoch

    def collater(self, samples: List[Dict[str, object]]) -> Dict[str, object]:
        return self.clips.collate(samples)

    def num_tokens(self, index: int) -> int:
        return 1

    def size(self, index: int) -> int:
        return 1

    def ordered_indices(self) -> np.ndarray:
        return self.clips.order()


@dataclass
class ClassificationTaskConfig(RelaunchOptions, LaunchOptions, FbankSettings):
    # the front end's task.* settings (target_length, num_mel_bins, norm_mean, norm_std) come from FbankSettings
    data: str = field(default=MISSING, metadata={"help": "folder with {split}.tsv, {split}.lbl, label_descriptors.csv"})
    multilabel: bool = field(default=True, metadata={"help": "true: sigmoid/BCE and mAP; false: softmax/CE and accuracy"})
    roll_aug: bool = field(
        default=False,
        metadata={
            "help": "training clips: the waveform rolled by a random offset and scaled by a random gain "
            "Beta(10, 10) + 0.5, before the fbank (official)"
        },
    )
    roll_fbank: bool = field(
        default=False,
        metadata={"help": "roll_aug as a circular shift of the fbank frames, without gain (not official)"},
    )
    noise_aug: bool = field(
        default=False,
        metadata={
            "help": "training clips: uniform noise up to U(0, 0.1) added to the normalised fbank, then a "
            "time shift of -10..9 frames (official task.noise, used for Speech Commands)"
        },
    )
    sample_with_replacement: bool = field(
        default=False,
        metadata={"help": "weights_file: draw the epoch's clips with replacement (official: without)"},
    )
    weights_file: Optional[str] = field(
        default=None, metadata={"help": "per-clip sampling weights for the training split (balanced sampling)"}
    )
    num_samples: int = field(default=200000, metadata={"help": "clips drawn per epoch with weights_file"})
    seed: int = field(default=1, metadata={"help": "seed of roll augmentation and weighted sampling"})


@register_task("sslam_classification", dataclass=ClassificationTaskConfig)
class SSLAMClassificationTask(FbankTask):
    cfg: ClassificationTaskConfig

    def __init__(self, cfg: ClassificationTaskConfig, labels: LabelSet):
        super().__init__(cfg)
        self.labels = labels

    @classmethod
    def setup_task(cls, cfg: ClassificationTaskConfig, **kwargs) -> "SSLAMClassificationTask":
        cls.resolve_data_folder(cfg)
        descriptors = os.path.join(cfg.data, "label_descriptors.csv")
        labels = read_label_descriptors(descriptors)
        logger.info("%d classes from %s", len(labels), descriptors)
        return cls(cfg, labels)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def load_dataset(self, split: str, **kwargs) -> None:
        self.datasets[split] = self.labelled_dataset(split, training=split == "train")

    def build_model(self, cfg, from_checkpoint: bool = False):
        model = super().build_model(cfg, from_checkpoint)
        # fairseq builds the model from a merged copy of cfg; this node is the run's own
        # config, saved in every checkpoint, and readers of a fine-tuned checkpoint take
        # the architecture from it: record the encoder the model really has (the one of
        # model.model_path), not the recipe's default.
        encoder = getattr(getattr(model, "classifier", None), "encoder", None)
        if encoder is not None and OmegaConf.is_config(cfg):
            with open_dict(cfg):
                cfg.encoder = OmegaConf.structured(encoder.cfg)
        return model

    def labelled_dataset(self, split: str, training: bool = False) -> LabelledFbankDataset:
        weights = self.cfg.weights_file if training else None
        clips = load_labelled_split(
            self.cfg.data,
            split,
            self.labels,
            self.fbank_config(),
            multilabel=self.cfg.multilabel,
            training=training,
            roll=self.cfg.roll_aug,
            seed=self.cfg.seed,
            weights_file=resolve_launch_path(weights) if weights else None,
            num_samples=self.cfg.num_samples,
            roll_fbank=self.cfg.roll_fbank,
            noise=self.cfg.noise_aug,
            sample_with_replacement=self.cfg.sample_with_replacement,
        )
        return LabelledFbankDataset(clips)

    def state_dict(self) -> Dict[str, object]:
        # saved in every checkpoint: exports and inference show label names
        return {"label_ids": list(self.labels.ids), "label_names": list(self.labels.names)}

    def load_state_dict(self, state_dict) -> None:
        """A checkpoint's labels (loading a model for inference) must be this task's, in this order."""
        self.check_label_order(state_dict.get("label_ids"), "the checkpoint")

    # fairseq saves and restores these with a resumed run's checkpoint
    def get_checkpoint_dict(self) -> Dict[str, object]:
        return {type(self).__name__: {"label_ids": list(self.labels.ids)}}

    def set_checkpoint_dict(self, state: Dict[str, object]) -> None:
        self.check_label_order(state.get("label_ids"), "the run's checkpoint")

    def check_label_order(self, saved: Optional[List[str]], where: str) -> None:
        """Refuse a head trained for other labels, or for the same labels in another order."""
        if saved is None or list(saved) == list(self.labels.ids):
            return
        current = list(self.labels.ids)
        if sorted(saved) == sorted(current):
            first = next(i for i, (a, b) in enumerate(zip(saved, current)) if a != b)
            detail = f"the same {len(current)} labels in another order (first difference at index {first}: {saved[first]!r} vs {current[first]!r})"
        else:
            detail = f"{len(saved)} labels there vs {len(current)} here, {len(set(saved) ^ set(current))} not shared"
        raise ValueError(
            f"{where} was trained with other class indices than {self.cfg.data}/label_descriptors.csv: {detail}. "
            "Use the label_descriptors.csv of that run, or start a new run (hydra.run.dir=...)"
        )
