"""Reading training clips so that broken files in a large collection do not stop a run.

The policy, case by case (``RobustClipReader`` and ``preflight_check``):

=======================================================  ==========================================
case                                                     what happens
=======================================================  ==========================================
manifest missing or malformed                            error before training (file and line named)
audio root (first manifest line) does not exist          error before training
archive of packed clips (zip shard, HDF5 file) missing   error before training (the archive named)
more than ``max_failed_fraction`` of a sample of clips   error before training (wrong root, unmounted
fails (the pre-flight check)                             disk, wrong file type: every clip would fail)
clip missing since the manifest was written              skip and substitute, counted and listed
clip that cannot be decoded (corrupt, truncated, not     skip and substitute, counted and listed
audio)
empty clip (0 bytes, 0 frames)                           skip and substitute, counted and listed
damaged archive member (bytes that do not decode, past   skip and substitute, counted and listed
the archive's end, an absent HDF5 dataset)
NaN or Inf samples                                       skip and substitute, counted and listed
shorter than one 25 ms analysis window                   skip and substitute, counted and listed
``max_substitutions + 1`` failures in a row              error: storage has most likely gone away
another sample rate than its neighbours                  not an error: resampled to 16 kHz
another channel count (stereo, 5.1)                      not an error: channels averaged to mono
another sample format (8-bit, 24-bit, float)             not an error: decoded to float in [-1, 1]
=======================================================  ==========================================

Of a clip longer than twice what the features use (``target_length`` frames),
only that beginning is decoded and resampled (:func:`crop_read_frames`): a
30-minute file costs what its first 10.24 s cost. The resampled samples are
those of the whole file, bit for bit; the features differ from the whole
file's only by float round-off of the mean removal (the crop's mean instead of
the file's; the fbank removes each frame's mean anyway). Shorter clips are read
whole, so their features are exactly what they always were. A waveform
``transform`` (the fine-tuning roll, which moves the end of a clip to its
start) needs the whole clip, which is then read.

"Substitute" means: the item is built from another clip, chosen
deterministically from (seed, index, attempt), so a rerun or a resumed run
sees the same data; the item carries a record of what failed
(:class:`ClipFailure`) so that a consumer in the main process can count and
list failures that happened in DataLoader workers. A file that failed once is
not decoded again by the same process.

For evaluation, where swapping clips would change the result, the
``"silence"`` policy keeps the clip (and its labels) with all-padding
features instead, and reports the failure the same way.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch

from ..features import (
    SAMPLE_RATE,
    FbankConfig,
    WaveformTransform,
    normalize_fbank,
    resample_to,
    waveform_to_features,
)
from ..augment import RollAndScale
from .audio import AudioLoadError, load_audio
from .manifest import Manifest, ManifestError
from .packed_audio import archives_of, close_packed_handles
from .rolled_crop import read_rolled, samples_for_16k_range

__all__ = [
    "ClipFailure",
    "ClipRead",
    "RobustClipReader",
    "crop_read_frames",
    "crop_samples",
    "preflight_check",
    "failure_reason",
]

logger = logging.getLogger(__name__)

POLICIES = ("substitute", "silence")


@dataclass(frozen=True)
class ClipFailure:
    """A clip that could not be used: manifest index, full path and why."""

    index: int
    path: str
    reason: str


@dataclass
class ClipRead:
    """The result of :meth:`RobustClipReader.read`.

    ``features``: (T, M) normalised log-mel features; ``index``: the clip they
    come from (the one asked for unless substituted); ``failures``: the clips
    that failed on the way, in order (empty when nothing went wrong).
    """

    features: torch.Tensor
    index: int
    failures: List[ClipFailure] = field(default_factory=list)

    @property
    def substituted(self) -> bool:
        return bool(self.failures)


def crop_samples(cfg: FbankConfig) -> int:
    """16 kHz samples that give exactly ``cfg.target_length`` fbank frames: all the features look at."""
    window = int(SAMPLE_RATE * cfg.frame_length_ms / 1000)
    shift = int(SAMPLE_RATE * cfg.frame_shift_ms / 1000)
    return (cfg.target_length - 1) * shift + window


def crop_read_frames(samples: int, sample_rate: int) -> int:
    """Samples at ``sample_rate`` to read so that resampling them gives the first ``samples`` 16 kHz samples
    exactly as resampling the whole file would (:func:`~.rolled_crop.samples_for_16k_range`)."""
    return samples_for_16k_range(0, samples, sample_rate, sys.maxsize)[1]


def failure_reason(err: Exception, path: str) -> str:
    """The message of an AudioLoadError without its leading ``path: ``."""
    text = str(err)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


class RobustClipReader:
    """Manifest clip -> features, surviving broken files (see the module docstring).

    Args:
        manifest: the clips.
        fbank: the front end.
        max_substitutions: failures tolerated in a row before giving up.
        seed: picks substitutes, with the clip index and the attempt.
        policy: ``"substitute"`` (training) or ``"silence"`` (evaluation).
    """

    def __init__(
        self,
        manifest: Manifest,
        fbank: FbankConfig = FbankConfig(),
        max_substitutions: int = 20,
        seed: int = 0,
        policy: str = "substitute",
    ):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if max_substitutions < 0:
            raise ValueError(f"max_substitutions must be >= 0, got {max_substitutions}")
        self.manifest = manifest
        self.fbank = fbank
        self.max_substitutions = max_substitutions
        self.seed = seed
        self.policy = policy
        self.known_bad: Dict[int, ClipFailure] = {}  # this process's failures, by index
        self.num_failures = 0  # failed reads in this process, revisits included

    def __len__(self) -> int:
        return len(self.manifest)

    def features(self, index: int, transform: Optional[WaveformTransform] = None) -> torch.Tensor:
        """(T, M) features of clip ``index``; raises AudioLoadError for any unusable clip.

        ``transform``: applied to the 16 kHz zero-mean waveform before the fbank
        (:func:`~sslam_plugin.features.waveform_to_features`).
        """
        path = self.manifest.full_path(index)
        keep = crop_samples(self.fbank)
        if isinstance(transform, RollAndScale):  # the fine-tuning roll: read where the rolled crop looks
            waveform, sample_rate, transform = read_rolled(path, keep, transform)
            return self._features(path, waveform, sample_rate, transform)
        limits: List[Optional[int]] = []

        def limit(rate: int, frames: int) -> Optional[int]:
            # another transform may reach the whole clip; else a long clip is read as far as used
            needed = crop_read_frames(keep, rate)
            limits.append(needed if transform is None and frames > 2 * needed else None)
            return limits[-1]

        waveform, sample_rate = load_audio(path, limit)  # (time,) mono at the file's rate
        if limits and limits[0] is not None:  # cut after resampling: the kept samples are the whole file's
            waveform, sample_rate = resample_to(waveform, sample_rate)[:keep], SAMPLE_RATE
        return self._features(path, waveform, sample_rate, transform)

    def _features(self, path, waveform: torch.Tensor, sample_rate: int, transform: Optional[WaveformTransform]):
        try:
            return waveform_to_features(waveform, sample_rate, self.fbank, transform)
        except ValueError as err:  # e.g. shorter than one analysis window
            raise AudioLoadError(f"{path}: {err}") from err

    def silence(self) -> torch.Tensor:
        """(T, M) features of an all-padding clip: zeros before normalisation, like the padded frames."""
        zeros = torch.zeros(self.fbank.target_length, self.fbank.num_mel_bins)
        return normalize_fbank(zeros, self.fbank.norm_mean, self.fbank.norm_std)

    def substitute(self, index: int, attempt: int) -> int:
        """The clip tried instead of ``index`` at ``attempt`` (1, 2, ...): never ``index`` itself."""
        n = len(self.manifest)
        if n < 2:
            return index
        pick = int(np.random.default_rng([self.seed, index, attempt]).integers(n - 1))
        return pick + 1 if pick >= index else pick

    def _try(self, index: int, transform: Optional[WaveformTransform] = None) -> torch.Tensor:
        if index in self.known_bad:
            raise _KnownBad(self.known_bad[index])
        try:
            return self.features(index, transform)
        except AudioLoadError as err:
            path = str(self.manifest.full_path(index))
            failure = ClipFailure(index, path, failure_reason(err, path))
            self.known_bad[index] = failure
            logger.warning("unusable clip %d (%s): %s", index, path, failure.reason)
            raise _KnownBad(failure) from err

    def read(self, index: int, transform: Optional[WaveformTransform] = None) -> ClipRead:
        """Features of clip ``index`` or, if it is unusable, of a substitute (or silence).

        ``transform`` (a waveform augmentation) is applied to whichever clip is
        read; silence is not transformed. Raises RuntimeError after
        ``max_substitutions + 1`` failures in a row.
        """
        failures: List[ClipFailure] = []
        candidate = index
        for attempt in range(self.max_substitutions + 1):
            if attempt:
                candidate = self.substitute(index, attempt)
            try:
                return ClipRead(self._try(candidate, transform), candidate, failures)
            except _KnownBad as bad:
                failures.append(bad.failure)
                self.num_failures += 1
                if self.policy == "silence":
                    return ClipRead(self.silence(), index, failures)
        raise RuntimeError(
            f"{len(failures)} clips in a row from {self.manifest.path} could not be used (last: "
            f"{failures[-1].path}: {failures[-1].reason}); the audio storage may have gone away. "
            f"Check it with scripts/validate_manifest.py {self.manifest.path}"
        )


class _KnownBad(Exception):
    def __init__(self, failure: ClipFailure):
        super().__init__(failure.reason)
        self.failure = failure


def preflight_check(
    manifest: Manifest,
    fbank: FbankConfig = FbankConfig(),
    num_clips: int = 16,
    max_failed_fraction: float = 0.5,
) -> List[ClipFailure]:
    """Fail fast, before training, when a manifest cannot work at all.

    Checks that the audio root and every archive of packed clips (zip shards, HDF5 files) exist, then
    fully reads ``num_clips`` clips
    spread evenly over the manifest. Raises :class:`ManifestError` naming the
    manifest and example reasons when the root or an archive is missing or more than
    ``max_failed_fraction`` of them fail; otherwise returns the failures
    (a few broken files are expected in a large collection).
    """
    if not manifest.root.is_dir():
        raise ManifestError(
            f"{manifest.path}: the audio root {manifest.root} (its first line) does not exist; fix that line, "
            "mount the storage, or regenerate the manifest with scripts/prepare_manifest.py"
        )
    for archive, clips in archives_of(manifest.files).items():  # packed clips: every archive must be there
        full = manifest.root / archive
        if not full.exists():
            raise ManifestError(
                f"{manifest.path}: the archive {full}, holding {clips} of its clips, is missing (file not found); "
                "mount the storage, fix the root line, or write the shards again with sslam-pack"
            )
    if num_clips <= 0 or len(manifest) == 0:
        return []
    indices = sorted(set(np.linspace(0, len(manifest) - 1, min(num_clips, len(manifest))).round().astype(int).tolist()))
    reader = RobustClipReader(manifest, fbank, max_substitutions=0)
    failures = []
    for index in indices:
        try:
            reader._try(index)
        except _KnownBad as bad:
            failures.append(bad.failure)
    close_packed_handles()  # DataLoader workers open their own
    if len(failures) > max_failed_fraction * len(indices):
        examples = "; ".join(f"{f.path}: {f.reason}" for f in failures[:3])
        raise ManifestError(
            f"{manifest.path}: {len(failures)} of {len(indices)} clips checked before training cannot be used "
            f"(e.g. {examples}). Is the root line right and the storage mounted? "
            f"Run scripts/validate_manifest.py {manifest.path} to list every bad file"
        )
    if failures:
        logger.warning(
            "%s: %d of %d clips checked before training are unusable; they will be substituted during training",
            manifest.path,
            len(failures),
            len(indices),
        )
    return failures
