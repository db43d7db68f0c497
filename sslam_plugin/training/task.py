"""The registered pre-training task: reads fairseq audio manifests ``{split}.tsv``."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING, DictConfig

from ..data import read_manifest
from ..features import AUDIOSET_MEAN, AUDIOSET_STD, FbankConfig
from .dataset import FbankMaskDataset

logger = logging.getLogger(__name__)

__all__ = ["SSLAMPretrainingTaskConfig", "SSLAMPretrainingTask"]


def resolve_launch_path(path: str) -> str:
    """A relative path as the user meant it: against the folder they launched from.

    hydra changes into its run directory before the task is built, so a plain
    relative path would resolve against the wrong folder.
    """
    if os.path.isabs(path):
        return path
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return os.path.join(HydraConfig.get().runtime.cwd, path)
    except ImportError:  # hydra is optional outside fairseq-hydra-train
        pass
    return os.path.abspath(path)


RESET_FLAGS = ("reset_optimizer", "reset_lr_scheduler", "reset_meters", "reset_dataloader")


def apply_continue_once_resets(task_cfg) -> None:
    """Make ``checkpoint.continue_once`` mean "start from these weights".

    On the first launch (no checkpoint_last.pt yet) the optimiser, lr schedule,
    meters and data position of the continued checkpoint are reset, as stage 2
    requires; once the run has its own checkpoint_last.pt, resuming restores
    all of them. fairseq itself would apply the same reset flags to both.
    """
    root = task_cfg._get_parent() if isinstance(task_cfg, DictConfig) else None
    ckpt = root.get("checkpoint") if root is not None else None
    if ckpt is None or not ckpt.get("continue_once"):
        return
    last = os.path.join(ckpt.save_dir, f"checkpoint_last{ckpt.get('checkpoint_suffix', '')}.pt")
    first_launch = not os.path.exists(last)
    for flag in RESET_FLAGS:
        ckpt[flag] = first_launch
    if first_launch:
        logger.info("continuing from the weights of %s with a fresh optimiser, schedule and meters", ckpt.continue_once)
    else:
        logger.info("resuming from %s (checkpoint.continue_once applies to the first launch only)", last)


@dataclass
class SSLAMPretrainingTaskConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "folder holding {split}.tsv manifests"})
    target_length: int = field(default=1024, metadata={"help": "frames per clip after padding/cropping"})
    num_mel_bins: int = field(default=128, metadata={"help": "mel bins"})
    norm_mean: float = field(default=AUDIOSET_MEAN, metadata={"help": "log-mel mean for normalisation"})
    norm_std: float = field(default=AUDIOSET_STD, metadata={"help": "log-mel std; inputs become (x - mean) / (2 std)"})
    min_sample_size: int = field(default=10000, metadata={"help": "skip clips shorter than this (samples)"})
    mask_ratio: float = field(default=0.8, metadata={"help": "fraction of patches masked"})
    mask_ratio_adjust: float = field(default=0.07, metadata={"help": "extra block centres drawn before trimming"})
    mask_block_size: int = field(default=5, metadata={"help": "side of the kept blocks, in patches"})
    clone_batch: int = II("model.clone_batch")
    patch_size: int = II("model.encoder.patch_size")
    seed: int = II("common.seed")


@register_task("sslam_pretraining", dataclass=SSLAMPretrainingTaskConfig)
class SSLAMPretrainingTask(FairseqTask):
    cfg: SSLAMPretrainingTaskConfig

    def __init__(self, cfg: SSLAMPretrainingTaskConfig):
        super().__init__(cfg)
        self._validate(cfg)

    @staticmethod
    def _validate(cfg: SSLAMPretrainingTaskConfig) -> None:
        if cfg.target_length <= 0 or cfg.target_length % cfg.patch_size:
            raise ValueError(
                f"task.target_length must be a positive multiple of model.encoder.patch_size "
                f"({cfg.patch_size}), got {cfg.target_length}"
            )
        if not 0.0 <= cfg.mask_ratio < 1.0:
            raise ValueError(f"task.mask_ratio must be in [0, 1), got {cfg.mask_ratio}")
        if cfg.norm_std <= 0:
            raise ValueError(f"task.norm_std must be positive, got {cfg.norm_std}")

    @classmethod
    def setup_task(cls, cfg: SSLAMPretrainingTaskConfig, **kwargs) -> "SSLAMPretrainingTask":
        data = resolve_launch_path(cfg.data)
        if not os.path.isdir(data):
            raise FileNotFoundError(
                f"task.data={cfg.data!r} is not a folder; point it at the folder holding train.tsv "
                "(e.g. task.data=/abs/path/to/manifests)"
            )
        cfg.data = data
        apply_continue_once_resets(cfg)
        return cls(cfg)

    def fbank_config(self) -> FbankConfig:
        return FbankConfig(
            target_length=self.cfg.target_length,
            num_mel_bins=self.cfg.num_mel_bins,
            norm_mean=self.cfg.norm_mean,
            norm_std=self.cfg.norm_std,
        )

    def load_dataset(self, split: str, **kwargs) -> None:
        path = os.path.join(self.cfg.data, f"{split}.tsv")
        manifest = read_manifest(path, min_samples=self.cfg.min_sample_size)
        if not manifest.root.is_dir():
            raise FileNotFoundError(f"{path}: audio root {manifest.root} does not exist")
        if len(manifest) == 0:
            raise ValueError(
                f"{path}: no clips with at least task.min_sample_size={self.cfg.min_sample_size} samples"
            )
        logger.info("loaded %d clips from %s (root %s)", len(manifest), path, manifest.root)
        self.datasets[split] = FbankMaskDataset(
            manifest,
            self.fbank_config(),
            patch_size=self.cfg.patch_size,
            clone_batch=self.cfg.clone_batch,
            mask_ratio=self.cfg.mask_ratio,
            mask_ratio_adjust=self.cfg.mask_ratio_adjust,
            mask_block_size=self.cfg.mask_block_size,
            seed=self.cfg.seed,
        )

    def max_positions(self):
        return sys.maxsize, sys.maxsize

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return None
