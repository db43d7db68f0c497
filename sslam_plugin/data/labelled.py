"""Labelled clips for fine-tuning and evaluation: a split's manifest, its labels and the front end.

A data folder holds ``{split}.tsv`` (fairseq audio manifest), ``{split}.lbl``
(``clip_id<TAB>label1,label2``) and ``label_descriptors.csv``
(``index,label_id,display_name``). Optional per-clip sampling weights (one
float per line, in ``train.tsv`` order) draw ``num_samples`` clips per epoch,
without replacement unless asked (the official sampler draws without).

Training clips can be augmented as the official fine-tuning does
(:mod:`sslam_plugin.augment`): ``roll`` rolls the waveform and scales it
before the fbank; ``roll_fbank`` turns that into the earlier circular shift of
the fbank frames without gain; ``noise`` adds noise to the normalised fbank and
shifts it by up to 10 frames. Every draw comes from a numpy Generator seeded
by (seed, epoch, clip index), so any worker, rerun or resumed run sees the same.

No fairseq needed: ``sslam_plugin.training`` wraps :class:`LabelledClips` for fairseq.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..augment import RollAndScale, noise_and_shift, roll_frames
from ..features import FbankConfig, WaveformTransform
from .labels import LabelSet, labels_for_files, multi_hot, read_clip_labels
from .manifest import read_manifest
from .robust import RobustClipReader, preflight_check
from .row_tables import IntListTable

__all__ = ["LabelledClips", "load_labelled_split", "read_sample_weights", "check_sample_count"]

logger = logging.getLogger(__name__)

# the noise stream's last seed word; the roll streams are (seed, epoch, index) as before. Not 0:
# numpy's SeedSequence pads with zeros, so (s, e, i, 0) would be the same stream as (s, e, i)
_NOISE_STREAM = 1


class LabelledClips(torch.utils.data.Dataset):
    """Items: ``source`` (1, T, M) features and ``target`` (C,) multi-hot labels.

    Unreadable clips never stop a run (``sslam_plugin.data.robust``): in
    training another clip is used with its own labels; in validation the clip
    is scored as silence with its labels kept, so the split stays the same.

    Args:
        roll: roll the waveform by a random offset and scale it by Beta(10, 10) + 0.5
            before the fbank (official ``roll_mag_aug``).
        roll_fbank: with ``roll``, shift the fbank frames circularly instead, without gain.
        noise: uniform noise on the normalised fbank, then a shift of -10..9 frames (official ``noise``).
        seed: seeds every draw with the epoch and the clip index.

    The caller switches the augmentations on for training splits only
    (:func:`load_labelled_split` does). ``sample_weights``, ``num_samples`` and
    ``sample_with_replacement`` choose the epoch's clips (:meth:`order`).
    """

    def __init__(
        self,
        manifest,
        labels: Sequence[Sequence[int]],
        num_classes: int,
        fbank: FbankConfig,
        training: bool,
        roll: bool = False,
        seed: int = 1,
        *,
        roll_fbank: bool = False,
        noise: bool = False,
    ):
        super().__init__()
        # packed: the workers read it for every item (a list of lists would be copied into each of them)
        self.labels = labels if isinstance(labels, IntListTable) else IntListTable.from_lists(labels)
        self.num_classes = num_classes
        self.roll = roll
        self.roll_fbank = roll_fbank
        self.noise = noise
        self.seed = seed
        self.epoch = 1
        self.sample_weights: Optional[np.ndarray] = None
        self.num_samples = 0
        self.sample_with_replacement = False
        self.reader = RobustClipReader(manifest, fbank, seed=seed, policy="substitute" if training else "silence")

    def __len__(self) -> int:
        return len(self.reader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def varies_by_epoch(self) -> bool:
        """True when items or their order depend on the epoch (augmentation or weighted sampling).

        fairseq may reuse one epoch's iterator (and its workers' copies of this
        dataset, which never see ``set_epoch``) only when this is False.
        """
        return self.sample_weights is not None or self.roll or self.noise

    def _roll_rng(self, index: int) -> np.random.Generator:
        # the stream the fbank roll has always used: runs with roll_fbank replay as before
        return np.random.default_rng([self.seed, self.epoch, index])

    def _waveform_transform(self, index: int) -> Optional[WaveformTransform]:
        if not self.roll or self.roll_fbank:
            return None
        # a fresh Generator per read: a substitute clip read after a failure gets the same draws
        return RollAndScale(lambda: self._roll_rng(index))

    def __getitem__(self, index: int) -> Dict[str, object]:
        read = self.reader.read(index, self._waveform_transform(index))
        fbank = read.features  # (T, M)
        if self.roll and self.roll_fbank:
            fbank = roll_frames(fbank, self._roll_rng(index))
        if self.noise:
            fbank = noise_and_shift(fbank, np.random.default_rng([self.seed, self.epoch, index, _NOISE_STREAM]))
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
        """This epoch's clips: all, in order, or ``num_samples`` drawn by ``sample_weights``.

        Without replacement (the default, as the official
        ``torch.multinomial(weights, n, replacement=False)``) each draw picks
        among the clips not yet drawn, in proportion to their weights; the
        result is in draw order. Reproducible from (seed, epoch).
        """
        if self.sample_weights is None:
            return np.arange(len(self))
        rng = np.random.default_rng([self.seed, self.epoch])
        p = self.sample_weights / self.sample_weights.sum()
        return rng.choice(len(self), size=self.num_samples, replace=self.sample_with_replacement, p=p)


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
    *,
    roll_fbank: bool = False,
    noise: bool = False,
    sample_with_replacement: bool = False,
) -> LabelledClips:
    """``{folder}/{split}.tsv`` with the labels of ``{split}.lbl``, checked before use.

    Args:
        training: unreadable clips are replaced by others (else scored as silence);
            ``roll`` and ``noise`` apply to training splits only.
        roll: waveform roll and gain before the fbank; with ``roll_fbank``, a circular
            shift of the fbank frames instead (see :class:`LabelledClips`).
        noise: fbank noise and a small time shift.
        weights_file: per-clip sampling weights; ``num_samples`` clips are drawn per epoch,
            without replacement unless ``sample_with_replacement``.
    """
    manifest_path = os.path.join(folder, f"{split}.tsv")
    manifest = read_manifest(manifest_path)
    lbl_path = os.path.join(folder, f"{split}.lbl")
    clip_labels = labels_for_files(manifest.files, read_clip_labels(lbl_path, labels), lbl_path, root=manifest.root)
    if not multilabel and np.any(clip_labels.lengths() != 1):
        raise ValueError(f"{lbl_path}: task.multilabel=false needs exactly one label per clip")
    preflight_check(manifest, fbank)
    if roll_fbank and not roll and training:
        logger.warning("task.roll_fbank has no effect without task.roll_aug")
    dataset = LabelledClips(
        manifest,
        clip_labels,
        len(labels),
        fbank,
        training,
        roll=roll and training,
        seed=seed,
        roll_fbank=roll_fbank,
        noise=noise and training,
    )
    if weights_file:
        weights = read_sample_weights(weights_file, len(manifest), manifest_path)
        check_sample_count(weights, num_samples, sample_with_replacement, weights_file)
        dataset.sample_weights, dataset.num_samples = weights, num_samples
        dataset.sample_with_replacement = sample_with_replacement
    logger.info("%s: %d labelled clips", split, len(manifest))
    return dataset


def read_sample_weights(weights_file: str, num_clips: int, manifest_path: str) -> np.ndarray:
    """(clips,) float64 sampling weights, one a line; finite, non-negative, not all zero."""
    weights = np.loadtxt(weights_file, dtype=np.float64, ndmin=1)
    if len(weights) != num_clips:
        raise ValueError(f"{weights_file} has {len(weights)} weights for {num_clips} clips in {manifest_path}")
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if bad.size:
        raise ValueError(f"{weights_file}: weights must be finite and >= 0; line {bad[0] + 1} is {weights[bad[0]]}")
    if not weights.any():
        raise ValueError(f"{weights_file}: every weight is 0")
    return weights


def check_sample_count(weights: np.ndarray, num_samples: int, with_replacement: bool, weights_file: str) -> None:
    """Refuse an epoch the sampler cannot draw: without replacement it needs ``num_samples`` clips of nonzero weight."""
    if num_samples <= 0:
        raise ValueError(f"task.num_samples must be positive with task.weights_file={weights_file}, got {num_samples}")
    drawable = int(np.count_nonzero(weights))
    if not with_replacement and num_samples > drawable:
        raise ValueError(
            f"task.num_samples={num_samples} clips cannot be drawn without replacement: {weights_file} gives "
            f"only {drawable} clips a nonzero weight. Lower task.num_samples or set task.sample_with_replacement=true"
        )
