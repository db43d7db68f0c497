"""The HEAR 2021 API, so that hear-eval-kit can benchmark any checkpoint :func:`load_encoder` reads.

    hear-validator sslam_plugin.hear --model /abs/path/checkpoint.pt --device cuda
    python -m heareval.embeddings.runner sslam_plugin.hear --model /abs/path/checkpoint.pt \\
        --tasks-dir /abs/hear/tasks --model-options '{"scene_pooling": "mean"}'

``--model`` takes what :func:`sslam_plugin.inference.load_encoder` takes: a fairseq
checkpoint (this plugin's or an official EAT / SSLAM one, pre-trained or fine-tuned) or
an export folder. Options (``load_model`` keyword arguments, hear-eval-kit's
``--model-options``) are listed in :func:`load_model`.

What the embeddings are (D = the encoder width, 768 for ViT-B):

* **Input**: ``audio`` (n_sounds, n_samples) at 16 kHz, float in [-1, 1] (or integer PCM),
  checked by :mod:`sslam_plugin.waveform` (NaN / Inf refused). A sound shorter than one
  25 ms analysis window is zero-padded to one.
* **Long sounds**: the fbank of a sound longer than the model's window (``target_length``
  frames: 1024 = 10.24 s for the paper's models) is cut into consecutive non-overlapping
  windows, the last one zero-padded (:func:`sslam_plugin.clips.clip_windows`, ``"windows"``);
  each window is encoded on its own, as in training. Nothing of the sound is dropped.
* **Timestamp embeddings**: one (D,) vector per patch row, the model's own time resolution
  (16 fbank frames = 160 ms): the mean of the row's frequency-patch tokens (the ``"time"``
  granularity of :mod:`sslam_plugin.clips`). Rows holding only padding are dropped, so the
  rows cover the sound to its end (the last one reaching at most 150 ms past it). The
  timestamp of row r is its centre, ``160 r + 80`` ms, with fbank frame i standing for
  [10 i, 10 i + 10) ms. ``timestamp_hop_ms`` (a divisor of 160, e.g. 40) repeats each row's
  vector at the centres of that finer grid, ``h i + h / 2`` ms, for downstream tasks that
  want timestamps closer than 160 ms; it adds no information.
* **Scene embeddings**: (D,) per sound; ``scene_pooling="cls"`` (default) is the CLS token,
  averaged over the sound's windows (the utterance vector EAT's utterance loss trains);
  ``"mean"`` is the mean of all the sound's patch tokens, padding rows excluded.

Embeddings are float32 on the model's device; timestamps are float32 milliseconds,
(n_sounds, n_timestamps), on the same device.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .clips import ClipWindows, clip_windows, row_timestamps
from .features import SAMPLE_RATE
from .inference import PretrainedAudioEncoder, load_encoder
from .vocabulary import parse_pooling
from .waveform import batch_clips, min_samples

__all__ = ["HearModel", "load_model", "get_scene_embeddings", "get_timestamp_embeddings"]

logger = logging.getLogger(__name__)

LOAD_OPTIONS = ("scene_pooling", "timestamp_hop_ms", "batch_size", "teacher", "dtype", "trust")


class HearModel(nn.Module):
    """A :class:`PretrainedAudioEncoder` with the attributes and settings the HEAR API needs.

    Attributes:
        sample_rate: 16000, the rate ``audio`` must have.
        scene_embedding_size: D.
        timestamp_embedding_size: D.
        scene_pooling: "cls" or "mean" (see the module docstring).
        timestamp_hop_ms: milliseconds between timestamps (160 = one per patch row).
        batch_size: windows per encoder call.
    """

    sample_rate: int = SAMPLE_RATE

    def __init__(
        self,
        encoder: PretrainedAudioEncoder,
        scene_pooling: str = "cls",
        timestamp_hop_ms: Optional[float] = None,
        batch_size: int = 16,
    ):
        super().__init__()
        scene_pooling = parse_pooling(scene_pooling, "scene_pooling")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.encoder = encoder.eval()
        self.scene_pooling = scene_pooling
        self.batch_size = int(batch_size)
        width = int(encoder.encoder.cfg.embed_dim)
        self.scene_embedding_size = width
        self.timestamp_embedding_size = width
        self.row_ms = encoder.encoder.cfg.patch_size * encoder.frontend.frame_shift_ms  # 160 ms
        hop = self.row_ms if timestamp_hop_ms is None else float(timestamp_hop_ms)
        steps = round(self.row_ms / hop) if hop > 0 else 0
        if steps < 1 or not math.isclose(steps * hop, self.row_ms):
            raise ValueError(
                f"timestamp_hop_ms must divide the patch row ({self.row_ms:g} ms) into whole steps, "
                f"got {timestamp_hop_ms}"
            )
        self.timestamp_hop_ms = hop
        self.steps_per_row = steps  # timestamps per patch row

    def windows(self, audio: torch.Tensor) -> list[ClipWindows]:
        """(n_sounds, n_samples) audio -> each sound's fbank windows (see the module docstring)."""
        clips = batch_clips(audio)  # no layout check: HEAR's (n_sounds, n_samples) is unambiguous, short sounds too
        shortest = min_samples(self.sample_rate)
        if clips and clips[0].numel() < shortest:
            # hear-eval-kit needs an embedding for every sound; silence after it changes no frame's content
            logger.warning("sounds of %d samples are zero-padded to one %d-sample analysis window",
                           clips[0].numel(), shortest)
        clips = [F.pad(c, (0, max(0, shortest - c.numel()))) for c in clips]
        return [clip_windows(c, self.sample_rate, self.encoder.frontend, "windows") for c in clips]


def load_model(model_file_path: str = "", **kwargs: Any) -> HearModel:
    """Load a checkpoint or export folder for the HEAR API.

    Args:
        model_file_path: what :func:`sslam_plugin.inference.load_encoder` takes
            (required: no weights ship with the package).
        scene_pooling: "cls" (default) or "mean".
        timestamp_hop_ms: None (default: one timestamp per 160 ms patch row) or a divisor of 160.
        batch_size: windows per encoder call (default 16).
        teacher: the EMA teacher of a pre-training checkpoint instead of the student.
        dtype: "float32" (default), "float16" or "bfloat16" compute; embeddings are float32.
        trust: allow the full unpickler for checkpoints that need it (runs code from the file).

    Returns:
        A :class:`HearModel` on the CPU in eval mode (hear-eval-kit moves it).
    """
    unknown = sorted(set(kwargs) - set(LOAD_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; sslam_plugin.hear.load_model takes {list(LOAD_OPTIONS)}")
    if not model_file_path:
        raise ValueError(
            "sslam_plugin.hear needs a checkpoint: pass --model /path/to/checkpoint.pt (or an export folder)"
        )
    encoder = load_encoder(
        model_file_path,
        dtype=kwargs.get("dtype"),
        teacher=bool(kwargs.get("teacher", False)),
        trust=bool(kwargs.get("trust", False)),
    )
    return HearModel(
        encoder,
        scene_pooling=kwargs.get("scene_pooling", "cls"),
        timestamp_hop_ms=kwargs.get("timestamp_hop_ms"),
        batch_size=int(kwargs.get("batch_size", 16)),
    )


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> Tuple[torch.Tensor, torch.Tensor]:
    """Embeddings along time (see the module docstring).

    Args:
        audio: (n_sounds, n_samples) at ``model.sample_rate``.
        model: from :func:`load_model`.

    Returns:
        embeddings (n_sounds, n_timestamps, D) float32 and timestamps (n_sounds, n_timestamps)
        float32 milliseconds, the centre of each embedding's time span.
    """
    if audio.dim() != 2:
        raise ValueError(f"expected audio of shape (n_sounds, n_samples), got {tuple(audio.shape)}")
    rows = model.encoder.encode_windows(model.windows(audio), "time", batch_size=model.batch_size)
    # every sound has the same length, hence the same row count
    embeddings = torch.stack([r.features for r in rows]).float()  # (n_sounds, R, D)
    if model.steps_per_row > 1:
        embeddings = embeddings.repeat_interleave(model.steps_per_row, dim=1)  # (N, R, D) -> (N, R * k, D)
        hop = model.timestamp_hop_ms
        times = torch.arange(embeddings.shape[1], dtype=torch.float64) * hop + hop / 2
    else:
        enc = model.encoder
        times = row_timestamps(embeddings.shape[1], enc.encoder.cfg.patch_size, enc.frontend.frame_shift_ms) * 1000.0
    timestamps = times.float().to(embeddings.device).expand(embeddings.shape[0], -1)  # (R,) -> (N, R)
    return embeddings, timestamps.contiguous()


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """One embedding per sound (see the module docstring).

    Args:
        audio: (n_sounds, n_samples) at ``model.sample_rate``.
        model: from :func:`load_model`.

    Returns:
        (n_sounds, D) float32.
    """
    if audio.dim() != 2:
        raise ValueError(f"expected audio of shape (n_sounds, n_samples), got {tuple(audio.shape)}")
    clips = model.encoder.encode_windows(
        model.windows(audio), "utterance", utterance_pooling=model.scene_pooling, batch_size=model.batch_size
    )
    return torch.stack([c.features for c in clips]).float()  # (n_sounds, D)
