"""A trained detection model for inference: files of any length -> frame posteriors -> events.

``load_detector(checkpoint)`` reads a checkpoint of ``config/sed`` training (fairseq's file,
without fairseq) and returns a :class:`SoundEventDetector` in eval mode, beside
:func:`sslam_plugin.inference.load_encoder` for encoders.

Long files: the fbank of the whole file is cut into windows of the model's ``target_length``
frames, ``overlap`` of a window apart (the start step a whole number of 160 ms patch rows); every
window's frame posteriors go back to their place in the file and overlapping windows are averaged
with weights that favour each window's centre (where the encoder saw context on both sides).
Decoding then runs once over the whole file's posteriors, so an event across a window edge is
one event: never lost, never doubled. The last window is zero-padded as in training.

Dimensions: T fbank frames, M mel bins, F output frames, C classes. No fairseq needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoints.files import config_value, load_checkpoint_file
from ..config_utils import dataclass_from_dict
from ..features import FbankConfig, compute_fbank, normalize_fbank, resample_to
from ..models.encoder import EncoderConfig
from ..waveform import mono_clip
from .decoding import PerClass, decode, median_filter, median_window_frames, class_values
from .head import FrameDetector
from .strong_labels import Event
from .targets import FrameGrid

__all__ = ["FramePosteriors", "SoundEventDetector", "load_detector", "TASK_NAME"]

TASK_NAME = "sslam_detection"
FrameModel = Callable[[torch.Tensor], torch.Tensor]  # (N, 1, T, M) -> (N, F, C) frame logits


class FramePosteriors(NamedTuple):
    posteriors: np.ndarray  # (F, C) in [0, 1], frame i = [i * hop, (i + 1) * hop)
    hop: float
    duration: float  # seconds of the file


class SoundEventDetector(nn.Module):
    """Front end + frame model + labels: ``posteriors(...)`` and ``detect(...)`` for whole files.

    Args:
        frame_model: (N, 1, T, M) normalised fbank -> (N, F, C) frame logits at ``grid.hop``
            (a :class:`FrameDetector`).
        frontend: the fbank the model was trained with (``target_length`` = window length).
        labels: class ids, in output order.
    """

    def __init__(self, frame_model: nn.Module, frontend: FbankConfig, grid: FrameGrid, labels: Sequence[str],
                 median_window: float = 0.0, threshold: float = 0.5):
        super().__init__()
        if grid.window_frames != frontend.target_length:
            raise ValueError(f"grid of {grid.window_frames} frames for a front end of {frontend.target_length}")
        self.frame_model = frame_model
        self.frontend = frontend
        self.grid = grid
        self.labels = list(labels)
        self.median_window = median_window
        self.threshold = threshold

    @property
    def device(self) -> torch.device:
        param = next(self.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def _file_fbank(self, waveform, sample_rate: int) -> torch.Tensor:
        wav = mono_clip(waveform, sample_rate)  # (time,) float32
        return compute_fbank(resample_to(wav, sample_rate), self.frontend)  # (T, M), not padded

    def window_starts(self, num_frames: int, overlap: float) -> List[int]:
        """First fbank frame of each window: a step of ``(1 - overlap)`` windows in whole patch rows."""
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        window, row = self.grid.window_frames, self.grid.patch_size
        step = max(row, int(round(window * (1.0 - overlap) / row)) * row)
        starts = [0]
        while starts[-1] + window < num_frames:
            starts.append(starts[-1] + step)
        return starts

    def _centre_weights(self) -> torch.Tensor:
        """(F,) triangular weights, highest at the window's centre, never 0."""
        n = self.grid.num_frames
        centre = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # (F,) in (0, 1)
        return 1.0 - (2.0 * centre - 1.0).abs() + 1e-3

    @torch.no_grad()
    def posteriors(self, waveform, sample_rate: int, overlap: float = 0.5, batch_size: int = 8) -> FramePosteriors:
        """Frame posteriors of one whole file (see the module docstring for the windows)."""
        fbank = self._file_fbank(waveform, sample_rate)  # (T, M)
        num_samples = int(np.asarray(waveform).shape[-1]) if not isinstance(waveform, torch.Tensor) else waveform.shape[-1]
        duration = num_samples / float(sample_rate)
        grid, window = self.grid, self.grid.window_frames
        starts = self.window_starts(fbank.shape[0], overlap)
        padded = F.pad(fbank, (0, 0, 0, starts[-1] + window - fbank.shape[0]))  # (T', M)
        norm = normalize_fbank(padded, self.frontend.norm_mean, self.frontend.norm_std)
        windows = torch.stack([norm[s : s + window] for s in starts]).unsqueeze(1)  # (W, 1, window, M)
        probs = torch.cat([
            torch.sigmoid(self.frame_model(chunk.to(self.device)).float()).cpu()
            for chunk in windows.split(batch_size)
        ]).double()  # (W, F, C)
        frames_per_fbank = grid.frame_shift / grid.hop
        total = int(round((starts[-1] + window) * frames_per_fbank))
        acc = torch.zeros(total, probs.shape[-1], dtype=torch.float64)
        weight = torch.zeros(total, 1, dtype=torch.float64)
        w = self._centre_weights().unsqueeze(1)  # (F, 1)
        for start, p in zip(starts, probs):
            first = int(round(start * frames_per_fbank))
            acc[first : first + grid.num_frames] += w * p
            weight[first : first + grid.num_frames] += w
        keep = max(1, int(math.ceil(duration / grid.hop - 1e-9)))
        return FramePosteriors((acc / weight)[:keep].numpy(), grid.hop, duration)

    def decode(self, posteriors: FramePosteriors, clip: str = "", thresholds: Optional[PerClass] = None,
               median_window: Optional[PerClass] = None) -> List[Event]:
        """Events of one file from its posteriors (the model's defaults where not given)."""
        return decode(
            posteriors.posteriors, self.labels, posteriors.hop,
            self.threshold if thresholds is None else thresholds,
            self.median_window if median_window is None else median_window,
            clip=clip, duration=posteriors.duration,
        )

    def filtered(self, posteriors: FramePosteriors, median_window: Optional[PerClass] = None) -> np.ndarray:
        """(F, C) posteriors after the median filter (what PSDS scores)."""
        seconds = class_values(self.median_window if median_window is None else median_window, self.labels, "median window")
        return median_filter(posteriors.posteriors, [median_window_frames(s, posteriors.hop) for s in seconds])

    def detect(self, waveform, sample_rate: int, clip: str = "", thresholds: Optional[PerClass] = None,
               median_window: Optional[PerClass] = None, overlap: float = 0.5) -> List[Event]:
        """Events of one file of any length."""
        return self.decode(self.posteriors(waveform, sample_rate, overlap), clip, thresholds, median_window)


def is_detection_checkpoint(path: Union[str, Path], trust: bool = False) -> bool:
    """Whether ``path`` is a checkpoint file of ``config/sed`` training (False for folders and other tasks)."""
    if not Path(path).is_file():
        return False
    cfg = load_checkpoint_file(path, trust=trust).get("cfg")
    return config_value(cfg, "task", "_name") == TASK_NAME


def load_detector(path: Union[str, Path], device: Union[str, torch.device, None] = None, trust: bool = False,
                  median_window: float = 0.0, threshold: float = 0.5) -> SoundEventDetector:
    """A checkpoint of ``config/sed`` training as a :class:`SoundEventDetector` in eval mode.

    Raises ValueError when the checkpoint is not a detection model's (e.g. a pre-training or
    classification checkpoint: use :func:`sslam_plugin.inference.load_encoder` for those).
    """
    ckpt = load_checkpoint_file(path, trust=trust)
    cfg = ckpt.get("cfg")
    task_name = config_value(cfg, "task", "_name")
    if task_name != TASK_NAME:
        raise ValueError(
            f"{path}: not a sound event detection checkpoint (its task is {task_name!r}, not {TASK_NAME!r}); "
            "train one with config/sed, or use load_encoder / sslam-infer for this checkpoint"
        )
    task = config_value(cfg, "task")
    encoder = dataclass_from_dict(EncoderConfig, config_value(cfg, "model", "encoder") or {})
    frontend = FbankConfig(target_length=int(task["target_length"]), num_mel_bins=int(task.get("num_mel_bins", 128)),
                           norm_mean=float(task["norm_mean"]), norm_std=float(task["norm_std"]))
    grid = FrameGrid(window_frames=frontend.target_length, hop=float(task["hop"]), patch_size=encoder.patch_size)
    labels = list((ckpt.get("task_state") or {}).get("label_ids") or [])
    state = {k[len("detector."):]: v for k, v in ckpt["model"].items() if k.startswith("detector.")}
    num_classes = state["head.weight"].shape[0]
    if len(labels) != num_classes:
        labels = [f"class_{i}" for i in range(num_classes)]
    row_pooling = config_value(cfg, "model", "row_pooling") or "mean"
    model = FrameDetector(encoder, num_classes, frames_per_row=grid.frames_per_row, row_pooling=row_pooling)
    model.load_state_dict(state, strict=True)
    detector = SoundEventDetector(model, frontend, grid, labels, median_window, threshold)
    return detector.to(device or "cpu").eval()
