"""The registered pre-training task: reads fairseq audio manifests ``{split}.tsv``.

Broken clips (see :mod:`sslam_plugin.data.robust` for the policy per case):
``load_dataset`` fails with a clear message when the audio root is missing or
most of a sample of clips cannot be read; during training an unusable clip is
replaced by another one, the number replaced is logged as ``bad_clips`` at
every log interval (summed over the interval; the epoch line sums the epoch),
and each distinct bad file is appended to ``failed_clips.tsv``
(``path<TAB>reason``) next to the checkpoints.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import torch
from fairseq import metrics
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING

from ..data.manifest import read_manifest, write_short_clips
from ..data.robust import ClipFailure, preflight_check
from ..features import FbankConfig, FbankSettings, fbank_config_from
from .data_loading import close_batch_iterator, track_batch_iterator
from .dataset import FbankMaskDataset
from .launch_options import LAUNCHED_ENV, PretrainingLaunchOptions
from .resume import resolve_launch_path

logger = logging.getLogger(__name__)

__all__ = ["RelaunchOptions", "SSLAMPretrainingTaskConfig", "SSLAMPretrainingTask"]


@dataclass
class RelaunchOptions(FairseqDataclass):
    """What every task of the plugin takes for the launcher's relaunch check (:func:`.resume.check_config_changes`)."""

    accept_config_changes: bool = field(
        default=False,
        metadata={
            "help": "relaunch only: continue the run's checkpoint although settings that make another experiment "
            "changed (data, model, seed, lr schedule, effective batch...); the launcher lists and logs them"
        },
    )


@dataclass
class SSLAMPretrainingTaskConfig(RelaunchOptions, PretrainingLaunchOptions, FbankSettings):
    # the front end's task.* settings (target_length, num_mel_bins, norm_mean, norm_std) come from FbankSettings
    data: str = field(default=MISSING, metadata={"help": "folder holding {split}.tsv manifests"})
    min_sample_size: int = field(default=10000, metadata={
            "help": "skip clips shorter than this many samples at 16 kHz, as the model sees them "
            "(10000 = 0.625 s), the same for every file rate"
        })
    mask_ratio: float = field(default=0.8, metadata={"help": "fraction of patches masked"})
    mask_ratio_adjust: float = field(default=0.07, metadata={"help": "extra block centres drawn before trimming"})
    mask_block_size: int = field(default=5, metadata={"help": "side of the kept blocks, in patches"})
    preflight_clips: int = field(
        default=16, metadata={"help": "clips read before training to catch a wrong root or unreadable data (0: off)"}
    )
    max_failed_fraction: float = field(
        default=0.5, metadata={"help": "stop before training when more than this fraction of the preflight clips fail"}
    )
    max_substitutions: int = field(
        default=20, metadata={"help": "unusable clips tolerated in a row (each replaced by another) before stopping"}
    )
    # task.effective_batch_size and task.failed_clips_dir: PretrainingLaunchOptions (checked by the launcher)
    clone_batch: int = II("model.clone_batch")
    patch_size: int = II("model.encoder.patch_size")
    seed: int = II("common.seed")


BAD_CLIPS_KEY = "_bad_clips"  # logging-output key: clips substituted in one batch
FAILED_CLIPS_FILE = "failed_clips.tsv"


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0


class FailedClipLog:
    """Counts substituted clips and appends each distinct bad file to ``failed_clips.tsv``.

    Lives in the main process; the failures arrive with the batches (see
    ``FbankMaskDataset.collater``). Rank r > 0 of a multi-GPU run writes
    ``failed_clips.rank{r}.tsv``. A resumed run keeps appending to the same file.
    """

    def __init__(self, folder: Optional[str]):
        self.path: Optional[str] = None
        self.reasons: Dict[str, str] = {}
        self.substituted = 0
        if folder:
            rank = _rank()
            name = FAILED_CLIPS_FILE if rank == 0 else f"failed_clips.rank{rank}.tsv"
            self.path = os.path.join(folder, name)
            if os.path.isfile(self.path):  # resuming: do not list the same files again
                with open(self.path, encoding="utf-8") as handle:
                    for line in handle:
                        path, _, reason = line.rstrip("\n").partition("\t")
                        self.reasons[path] = reason

    def record(self, failures: Iterable[ClipFailure]) -> int:
        """Count a batch's failures; list new files; returns how many clips were substituted."""
        failures = list(failures)
        new = [f for f in dict((f.path, f) for f in failures).values() if f.path not in self.reasons]
        self.substituted += len(failures)
        for f in new:
            self.reasons[f.path] = " ".join(f.reason.split())
        if new:
            if self.path:
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.writelines(f"{f.path}\t{self.reasons[f.path]}\n" for f in new)
            logger.warning(
                "%d new unusable clips replaced by others (%d replacements, %d distinct files so far%s)",
                len(new),
                self.substituted,
                len(self.reasons),
                f"; listed in {self.path}" if self.path else "",
            )
        return len(failures)


class FbankTask(FairseqTask):
    """What the pre-training and classification tasks share: the data folder, the
    fbank front end from ``task.*``, no token dictionaries, and batch iterators
    that are closed when done (:mod:`.data_loading`)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._batch_iterators: Dict[int, object] = {}
        if not os.environ.get(LAUNCHED_ENV):
            logger.warning(
                "this run was not started through the plugin's launcher (hydra.callbacks.sslam_launch in the "
                "shipped recipes): CPU data parallelism, checkpoint.continue_once on relaunch, damaged-checkpoint "
                "fallback and task.effective_batch_size are off"
            )

    def get_batch_iterator(self, dataset, **kwargs):
        """fairseq's iterator; the previous one of the same dataset is closed first."""
        epoch_itr = super().get_batch_iterator(dataset, **kwargs)
        previous = self._batch_iterators.get(id(dataset))
        if previous is not None and previous is not epoch_itr:
            close_batch_iterator(previous)
        self._batch_iterators[id(dataset)] = epoch_itr
        track_batch_iterator(epoch_itr)
        return epoch_itr

    @staticmethod
    def resolve_data_folder(cfg) -> None:
        """Resolve ``task.data`` against the launch folder; it must hold the manifests."""
        data = resolve_launch_path(cfg.data)
        if not os.path.isdir(data):
            raise FileNotFoundError(
                f"task.data={cfg.data!r} is not a folder; point it at the folder holding the {{split}}.tsv "
                "manifests (e.g. task.data=/abs/path/to/manifests)"
            )
        cfg.data = data

    def fbank_config(self) -> FbankConfig:
        return fbank_config_from(self.cfg)

    def max_positions(self):
        return sys.maxsize, sys.maxsize

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return None


@register_task("sslam_pretraining", dataclass=SSLAMPretrainingTaskConfig)
class SSLAMPretrainingTask(FbankTask):
    cfg: SSLAMPretrainingTaskConfig

    def __init__(self, cfg: SSLAMPretrainingTaskConfig):
        super().__init__(cfg)
        self._validate(cfg)
        self.failed_clips = FailedClipLog(cfg.failed_clips_dir)

    @staticmethod
    def _validate(cfg: SSLAMPretrainingTaskConfig) -> None:
        if cfg.target_length <= 0 or cfg.target_length % cfg.patch_size:
            raise ValueError(
                f"task.target_length must be a positive multiple of model.encoder.patch_size "
                f"({cfg.patch_size}), got {cfg.target_length}"
            )
        if not 0.0 <= cfg.max_failed_fraction <= 1.0:
            raise ValueError(f"task.max_failed_fraction must be in [0, 1], got {cfg.max_failed_fraction}")
        if not 0.0 <= cfg.mask_ratio < 1.0:
            raise ValueError(f"task.mask_ratio must be in [0, 1), got {cfg.mask_ratio}")
        if cfg.norm_std <= 0:
            raise ValueError(f"task.norm_std must be positive, got {cfg.norm_std}")
        if cfg.effective_batch_size is not None and cfg.effective_batch_size < 1:
            raise ValueError(f"task.effective_batch_size must be >= 1 or null, got {cfg.effective_batch_size}")

    @classmethod
    def setup_task(cls, cfg: SSLAMPretrainingTaskConfig, **kwargs) -> "SSLAMPretrainingTask":
        cls.resolve_data_folder(cfg)
        return cls(cfg)

    def load_dataset(self, split: str, **kwargs) -> None:
        path = os.path.join(self.cfg.data, f"{split}.tsv")
        manifest = read_manifest(path, min_samples=self.cfg.min_sample_size)
        if len(manifest) == 0:
            raise ValueError(
                f"{path}: no clips with at least task.min_sample_size={self.cfg.min_sample_size} samples"
            )
        listed = write_short_clips(manifest, self.cfg.failed_clips_dir, split) if self.cfg.failed_clips_dir else None
        logger.info(
            "loaded %d clips from %s (root %s); %d shorter than task.min_sample_size left out%s",
            len(manifest), path, manifest.root, len(manifest.dropped), f" (listed in {listed})" if listed else "",
        )
        preflight_check(
            manifest,
            self.fbank_config(),
            num_clips=self.cfg.preflight_clips,
            max_failed_fraction=self.cfg.max_failed_fraction,
        )
        self.datasets[split] = FbankMaskDataset(
            manifest,
            self.fbank_config(),
            patch_size=self.cfg.patch_size,
            clone_batch=self.cfg.clone_batch,
            mask_ratio=self.cfg.mask_ratio,
            mask_ratio_adjust=self.cfg.mask_ratio_adjust,
            mask_block_size=self.cfg.mask_block_size,
            seed=self.cfg.seed,
            max_substitutions=self.cfg.max_substitutions,
        )

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        loss, sample_size, logging_output = super().train_step(
            sample, model, criterion, optimizer, update_num, ignore_grad
        )
        # A dummy batch repeats an earlier one (its failures are counted); the key
        # is there anyway, since every rank must send the same log keys.
        failures = () if ignore_grad else sample.get("failed_clips", ())
        logging_output[BAD_CLIPS_KEY] = self.failed_clips.record(failures)
        return loss, sample_size, logging_output

    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        logging_output[BAD_CLIPS_KEY] = self.failed_clips.record(sample.get("failed_clips", ()))
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs: List[dict], criterion) -> None:
        counted = [log for log in logging_outputs if BAD_CLIPS_KEY in log]
        if counted:
            logging_outputs = [{k: v for k, v in log.items() if k != BAD_CLIPS_KEY} for log in logging_outputs]
        super().reduce_metrics(logging_outputs, criterion)
        if counted:
            # summed over ranks and over the log interval (the epoch line: over the epoch)
            metrics.log_scalar_sum("bad_clips", sum(int(log[BAD_CLIPS_KEY]) for log in counted), priority=900)

    def begin_epoch(self, epoch, model) -> None:
        if self.failed_clips.substituted:
            logger.warning(
                "so far %d clips were replaced for %d distinct unusable files (%s)",
                self.failed_clips.substituted,
                len(self.failed_clips.reasons),
                self.failed_clips.path or "no checkpoint folder to list them in",
            )
