"""The registered classification task: labelled manifests for fine-tuning and linear evaluation.

Data folder: ``{split}.tsv`` (fairseq audio manifest), ``{split}.lbl``
(``clip_id<TAB>label1,label2``) and ``label_descriptors.csv``
(``index,label_id,display_name``). Optional per-clip sampling weights (one
float per line, in ``train.tsv`` order) draw ``num_samples`` clips per epoch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from fairseq.data import FairseqDataset
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import register_task
from omegaconf import MISSING

from ..data import LabelSet, labels_for_files, multi_hot, read_clip_labels, read_label_descriptors, read_manifest
from ..data.robust import RobustClipReader, preflight_check
from ..features import AUDIOSET_MEAN, AUDIOSET_STD, FbankConfig
from .resume import resolve_launch_path
from .task import FbankTask

logger = logging.getLogger(__name__)

__all__ = ["ClassificationTaskConfig", "SSLAMClassificationTask", "LabelledFbankDataset"]


class LabelledFbankDataset(FairseqDataset):
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

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return self.sample_weights is None and not self.roll

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

    def collater(self, samples: List[Dict[str, object]]) -> Dict[str, object]:
        if not samples:
            return {}
        return {
            "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
            "net_input": {"source": torch.stack([s["source"] for s in samples])},  # (B, 1, T, M)
            "target": torch.stack([s["target"] for s in samples]),  # (B, C)
        }

    def num_tokens(self, index: int) -> int:
        return 1

    def size(self, index: int) -> int:
        return 1

    def ordered_indices(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.sample_weights is None:
            return np.arange(len(self))
        p = self.sample_weights / self.sample_weights.sum()
        return rng.choice(len(self), size=self.num_samples, replace=True, p=p)


@dataclass
class ClassificationTaskConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "folder with {split}.tsv, {split}.lbl, label_descriptors.csv"})
    target_length: int = field(default=1024, metadata={"help": "frames per clip after padding/cropping"})
    num_mel_bins: int = field(default=128, metadata={"help": "mel bins"})
    norm_mean: float = field(default=AUDIOSET_MEAN, metadata={"help": "log-mel mean of the dataset"})
    norm_std: float = field(default=AUDIOSET_STD, metadata={"help": "log-mel std of the dataset"})
    multilabel: bool = field(default=True, metadata={"help": "true: sigmoid/BCE and mAP; false: softmax/CE and accuracy"})
    roll_aug: bool = field(default=False, metadata={"help": "random circular time shift of training clips"})
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

    def labelled_dataset(self, split: str, training: bool = False) -> LabelledFbankDataset:
        manifest_path = os.path.join(self.cfg.data, f"{split}.tsv")
        manifest = read_manifest(manifest_path)
        lbl_path = os.path.join(self.cfg.data, f"{split}.lbl")
        labels = labels_for_files(manifest.files, read_clip_labels(lbl_path, self.labels), lbl_path)
        if not self.cfg.multilabel and any(len(lab) != 1 for lab in labels):
            raise ValueError(f"{split}.lbl: task.multilabel=false needs exactly one label per clip")
        preflight_check(manifest, self.fbank_config())
        dataset = LabelledFbankDataset(
            manifest, labels, self.num_classes, self.fbank_config(), training, self.cfg.roll_aug and training, self.cfg.seed
        )
        if training and self.cfg.weights_file:
            weights = np.loadtxt(resolve_launch_path(self.cfg.weights_file), dtype=np.float64, ndmin=1)
            if len(weights) != len(manifest):
                raise ValueError(
                    f"task.weights_file has {len(weights)} weights for {len(manifest)} clips in {manifest_path}"
                )
            dataset.sample_weights, dataset.num_samples = weights, self.cfg.num_samples
        logger.info("%s: %d labelled clips", split, len(manifest))
        return dataset

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
