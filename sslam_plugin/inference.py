"""A ready-to-use encoder: fbank front end + :class:`AudioEncoder` (+ optional classifier).

``load_encoder(path)`` takes an export folder, an EAT/SSLAM Hugging Face folder or
repository id, or a fairseq checkpoint and returns
a :class:`PretrainedAudioEncoder` in eval mode; ``encoder(waveform, sample_rate)``
then gives the token sequence, and :meth:`PretrainedAudioEncoder.extract_features`
the granularity you ask for. No fairseq is imported.

The granularities and long-clip windows are in :mod:`sslam_plugin.clips`.

Waveforms go through the front end the checkpoint was trained with: 16 kHz
Kaldi fbank, zero-padded or cropped to ``target_length`` frames, normalised.

Inputs are checked first (:mod:`sslam_plugin.waveform`): NaN or Inf samples and
integer types without a known scale (int64, bool) raise :class:`WaveformError`;
int16 / int32 / int8 / uint8 PCM is scaled to [-1, 1]; ``(N, C, time)`` batches
and ``(C, time)`` list items are averaged to mono, while ``(N, time)`` is always
N mono clips. A clip longer than the model's window (``target_length`` frames,
10.24 s at 1024) is cropped to its first window by ``model(...)``,
:meth:`~PretrainedAudioEncoder.extract_features` and the classifier methods, as in
training; :meth:`~PretrainedAudioEncoder.extract_clips` with ``long_clips="windows"``
encodes it whole in consecutive windows. Either is logged once per model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Sequence, Set, Union

import numpy as np
import torch
import torch.nn as nn

from .checkpoints import DTYPES, EncoderExport, HeadConfig, Label, load_any
from .data.labels import placeholder_labels
from .features import FbankConfig
from .clips import (
    ClipFeatures,
    ClipWindows,
    TimeFeatures,
    as_tensor,
    check_granularity,
    clip_windows,
    combine_windows,
    row_timestamps,
)
from .models.classifier import classify, pool
from .models.encoder import AudioEncoder, EncoderConfig
from .vocabulary import GRANULARITIES
from .waveform import WaveformError, batch_clips, mono_clip

logger = logging.getLogger(__name__)

__all__ = [
    "GRANULARITIES",
    "TimeFeatures",
    "ClipFeatures",
    "ClipWindows",
    "Prediction",
    "PretrainedAudioEncoder",
    "WaveformError",
    "clip_windows",
    "combine_windows",
    "load_encoder",
]

Waveforms = Union[torch.Tensor, np.ndarray, Sequence[Union[torch.Tensor, np.ndarray]]]


class Prediction(NamedTuple):
    index: int
    label_id: str
    name: str
    score: float


# ------------------------------------------------------------------ model
class PretrainedAudioEncoder(nn.Module):
    """Front end + encoder (+ classifier): ``model(waveform, sample_rate)`` -> (N, 1 + L, D).

    Attributes:
        encoder: the :class:`AudioEncoder`.
        frontend: the :class:`FbankConfig` waveforms go through.
        head_config, fc_norm, head: the classifier, or None.
        labels: one :class:`Label` per class, or None.
    """

    def __init__(
        self,
        encoder: EncoderConfig,
        frontend: FbankConfig,
        head: Optional[HeadConfig] = None,
        labels: Optional[List[Label]] = None,
    ):
        super().__init__()
        self.encoder = AudioEncoder(encoder)
        self.frontend = frontend
        self.head_config = head
        self.labels = labels
        self.fc_norm: Optional[nn.LayerNorm] = None
        self.head: Optional[nn.Linear] = None
        self._long_clip_notes: Set[str] = set()  # long-clip handling already logged ("crop", "windows")
        if head is not None:
            head.validate()
            if head.fc_norm:
                self.fc_norm = nn.LayerNorm(encoder.embed_dim, eps=head.fc_norm_eps)
            self.head = nn.Linear(encoder.embed_dim, head.num_classes)

    @classmethod
    def from_export(cls, export: EncoderExport) -> "PretrainedAudioEncoder":
        model = cls(export.encoder, export.frontend, export.head, export.labels)
        model.load_state_dict(export.state, strict=True)
        return model.eval()

    @property
    def device(self) -> torch.device:
        return self.encoder.cls_token.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.cls_token.dtype

    # -------------------------------------------------------------- inputs
    def fbank(self, waveforms: Waveforms, sample_rate: int) -> torch.Tensor:
        """Waveforms -> normalised fbank cropped or padded to ``target_length``.

        Args:
            waveforms: (time,), (N, time) mono clips, (N, C, time) clips whose channels
                are averaged, or a list of (time,) / (C, time) clips of any lengths;
                float in [-1, 1] or integer PCM (see :mod:`sslam_plugin.waveform`).

        Returns:
            (N, target_length, M) float32, on the waveforms' device.

        Raises:
            WaveformError: NaN / Inf samples, an unknown sample type or a misplaced time axis.
        """
        windows = [clip_windows(c, sample_rate, self.frontend) for c in batch_clips(waveforms, sample_rate)]
        self._note_long_clips(windows, "crop")
        return torch.stack([w.fbank[0] for w in windows])

    def _note_long_clips(self, windows: Sequence[ClipWindows], mode: str) -> None:
        """Say once per model what happens to clips longer than its window (cropped or windowed)."""
        longest = max((w.num_frames for w in windows), default=0)
        window = self.frontend.target_length
        if longest <= window or mode in self._long_clip_notes:
            return
        self._long_clip_notes.add(mode)
        seconds = self.frontend.frame_shift_ms / 1000.0
        if mode == "crop":
            logger.warning(
                "a clip of %d fbank frames (%.2f s) is longer than the model's window (%d frames = %.2f s): such "
                "clips are cropped to their first %.2f s, as in training; extract_clips(..., long_clips='windows') "
                "(sslam-extract --long-clips windows) encodes whole clips",
                longest, longest * seconds, window, window * seconds, window * seconds,
            )
        else:
            logger.info(
                "a clip of %d fbank frames (%.2f s) is longer than the model's window (%d frames = %.2f s): such "
                "clips are encoded in consecutive non-overlapping windows (the last one zero-padded) whose "
                "features are concatenated in time (utterance features: averaged over the windows)",
                longest, longest * seconds, window, window * seconds,
            )

    def _to_fbank(self, x: Waveforms, sample_rate: Optional[int]) -> torch.Tensor:
        if sample_rate is not None:
            return self.fbank(x, sample_rate)
        if not isinstance(x, (torch.Tensor, np.ndarray)):
            raise ValueError("pass sample_rate with waveforms; without it the input is read as fbank features")
        fbank = as_tensor(x)
        if fbank.dim() == 2:
            fbank = fbank.unsqueeze(0)  # (T, M) -> (1, T, M)
        if fbank.dim() == 4 and fbank.shape[1] == 1:
            fbank = fbank[:, 0]  # (N, 1, T, M) -> (N, T, M)
        if fbank.dim() != 3 or fbank.shape[-1] != self.encoder.cfg.num_mel_bins:
            raise ValueError(
                f"without sample_rate the input must be normalised fbank (batch, frames, "
                f"{self.encoder.cfg.num_mel_bins}); got shape {tuple(fbank.shape)}. Pass sample_rate for waveforms."
            )
        if not bool(torch.isfinite(fbank).all()):
            raise WaveformError(f"the fbank input holds {int((~torch.isfinite(fbank)).sum())} NaN or Inf values")
        return fbank

    # ------------------------------------------------------------- encoder
    @torch.no_grad()
    def encode(self, fbank: torch.Tensor) -> torch.Tensor:
        """(N, T, M) normalised fbank -> (N, 1 + L, D) tokens, CLS first (no masking).

        T must be a multiple of the patch size; the output is on the model's device and dtype.
        """
        fbank = fbank.to(device=self.device, dtype=self.dtype)
        return self.encoder(fbank.unsqueeze(1)).x  # (N, T, M) -> (N, 1, T, M) -> (N, 1 + L, D)

    def extract_features(
        self,
        waveform_or_fbank: Waveforms,
        sample_rate: Optional[int] = None,
        granularity: str = "all",
        utterance_pooling: str = "cls",
    ) -> Union[torch.Tensor, TimeFeatures]:
        """Features of a batch of clips at one granularity (by default, as ``model(...)``: all tokens).

        Args:
            waveform_or_fbank: waveforms (time,), (N, time) or a list of clips,
                with ``sample_rate``; or, without it, normalised fbank
                (T, M), (N, T, M) or (N, 1, T, M) used as given.
            granularity: "patch" (N, L, D), "utterance" (N, D), "all" (N, 1 + L, D)
                or "time" -> :class:`TimeFeatures` ((N, R, D), (R,) seconds).
            utterance_pooling: "cls" (token 0) or "mean" (mean of the patch tokens).
        """
        granularity, utterance_pooling = check_granularity(granularity, utterance_pooling)
        tokens = self.encode(self._to_fbank(waveform_or_fbank, sample_rate))  # (N, 1 + L, D)
        if granularity == "all":
            return tokens
        if granularity == "patch":
            return tokens[:, 1:]
        if granularity == "utterance":
            return pool(tokens, utterance_pooling)
        n, s, d = tokens.shape
        f = self.encoder.freq_patches
        rows = tokens[:, 1:].reshape(n, (s - 1) // f, f, d).mean(dim=2)  # (N, R * F, D) -> (N, R, D)
        return TimeFeatures(rows, row_timestamps(rows.shape[1], self.encoder.cfg.patch_size, self.frontend.frame_shift_ms))

    def forward(
        self, waveform_or_fbank: Waveforms, sample_rate: Optional[int] = None, granularity: str = "all"
    ) -> Union[torch.Tensor, TimeFeatures]:
        """``extract_features``: all tokens, (N, 1 + L, D), unless another granularity is asked for."""
        return self.extract_features(waveform_or_fbank, sample_rate, granularity)

    def extract_clips(
        self,
        waveforms: Sequence[Union[torch.Tensor, np.ndarray]],
        sample_rate: Union[int, Sequence[int]],
        granularity: str = "patch",
        long_clips: str = "crop",
        utterance_pooling: str = "cls",
        trim_padding: bool = True,
        batch_size: int = 8,
    ) -> List[ClipFeatures]:
        """Per-clip features of clips of any length (see :func:`clip_windows`, :func:`combine_windows`).

        Args:
            waveforms: a list of (time,) or (C, time) clips (channels averaged), float in
                [-1, 1] or integer PCM (see :mod:`sslam_plugin.waveform`).
            sample_rate: one rate for all, or one per clip.
            long_clips: "crop" to ``target_length`` or "windows" (features concatenated).
            trim_padding: drop the rows that only hold padding.
            batch_size: windows per encoder call.

        Raises:
            WaveformError: naming the clip (by its index) with NaN / Inf samples and the like.
        """
        rates = [sample_rate] * len(waveforms) if isinstance(sample_rate, int) else list(sample_rate)
        windows = [
            clip_windows(mono_clip(w, r, f"clip {i}"), r, self.frontend, long_clips)
            for i, (w, r) in enumerate(zip(waveforms, rates))
        ]
        return self.encode_windows(windows, granularity, utterance_pooling, trim_padding, batch_size)

    def encode_windows(
        self,
        windows: Sequence[ClipWindows],
        granularity: str = "patch",
        utterance_pooling: str = "cls",
        trim_padding: bool = True,
        batch_size: int = 8,
    ) -> List[ClipFeatures]:
        """Encode prepared :class:`ClipWindows` in batches and combine each clip's windows."""
        granularity, utterance_pooling = check_granularity(granularity, utterance_pooling)
        if not windows:
            return []
        self._note_long_clips([w for w in windows if w.fbank.shape[0] == 1], "crop")
        self._note_long_clips([w for w in windows if w.fbank.shape[0] > 1], "windows")
        stacked = torch.cat([w.fbank for w in windows])  # (sum W, T, M)
        tokens = torch.cat([self.encode(chunk) for chunk in stacked.split(batch_size)])  # (sum W, 1 + L, D)
        out, start = [], 0
        for clip in windows:
            count = clip.fbank.shape[0]
            out.append(
                combine_windows(
                    tokens[start : start + count],
                    clip.num_frames,
                    granularity,
                    self.encoder.cfg.patch_size,
                    self.encoder.freq_patches,
                    self.frontend.frame_shift_ms,
                    utterance_pooling,
                    trim_padding,
                )
            )
            start += count
        return out

    # ---------------------------------------------------------- classifier
    def _require_head(self) -> HeadConfig:
        if self.head is None or self.head_config is None:
            raise RuntimeError(
                "this encoder has no classification head: predictions need a fine-tuned checkpoint "
                "(or an export of one)"
            )
        return self.head_config

    @torch.no_grad()
    def logits(self, waveform_or_fbank: Waveforms, sample_rate: Optional[int] = None) -> torch.Tensor:
        """(N, num_classes) classifier logits: head(fc_norm(pooled))."""
        head = self._require_head()
        pooled = self.extract_features(waveform_or_fbank, sample_rate, "utterance", head.pooling)  # (N, D)
        return classify(pooled, self.fc_norm, self.head)

    def scores(self, waveform_or_fbank: Waveforms, sample_rate: Optional[int] = None) -> torch.Tensor:
        """(N, num_classes) float32 scores: sigmoid (multi-label heads) or softmax."""
        head = self._require_head()
        logits = self.logits(waveform_or_fbank, sample_rate).float()
        return torch.sigmoid(logits) if head.activation == "sigmoid" else torch.softmax(logits, dim=-1)

    def predict(
        self, waveform_or_fbank: Waveforms, sample_rate: Optional[int] = None, top_k: int = 5
    ) -> List[List[Prediction]]:
        """The ``top_k`` best labels of each clip, best first."""
        scores = self.scores(waveform_or_fbank, sample_rate).cpu()
        k = min(top_k, scores.shape[1])
        values, indices = scores.topk(k, dim=1)
        labels = self.labels or placeholder_labels(scores.shape[1])
        return [
            [Prediction(int(i), labels[int(i)].id, labels[int(i)].name, float(v)) for v, i in zip(vs, ids)]
            for vs, ids in zip(values, indices)
        ]


def load_encoder(
    path: Union[str, Path],
    device: Union[str, torch.device, None] = None,
    dtype: Union[str, torch.dtype, None] = None,
    teacher: bool = False,
    trust: bool = False,
    **convert_kwargs: Any,
) -> PretrainedAudioEncoder:
    """Load an export, a Hugging Face folder or repository, or a fairseq checkpoint as a :class:`PretrainedAudioEncoder`.

    Args:
        path: an export folder (or its config.json / model.safetensors); an
            EAT/SSLAM Hugging Face folder (pre-trained or fine-tuned) or hub
            repository id such as ``"ta012/SSLAM_pretrain"`` (downloaded with
            ``huggingface_hub``); or a fairseq checkpoint of this plugin or
            official EAT/SSLAM (pre-trained or fine-tuned).
        device: where to put it (default CPU).
        dtype: torch dtype or "float32"/"float16"/"bfloat16" (default float32).
        teacher: for pre-training checkpoints, the EMA teacher instead of the student.
        trust: allow the full unpickler for checkpoints that need it (runs code from the file).
        convert_kwargs: passed to :func:`sslam_plugin.checkpoints.load_any`
            (num_heads, labels_csv, activation, frontend_overrides; revision for a hub id).

    Returns:
        The model in eval mode.
    """
    export = load_any(path, trust=trust, teacher=teacher, **convert_kwargs)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    export = export.to(dtype or torch.float32)
    model = PretrainedAudioEncoder.from_export(export)
    return model.to(device or "cpu")
