"""A ready-to-use encoder: fbank front end + :class:`AudioEncoder` (+ optional classifier).

``load_encoder(path)`` takes an export folder or a fairseq checkpoint and returns
a :class:`PretrainedAudioEncoder` in eval mode; ``encoder(waveform, sample_rate)``
then gives the token sequence, and :meth:`PretrainedAudioEncoder.extract_features`
the granularity you ask for. No fairseq is imported.

Granularities (N clips, L = R * F patches: R time rows of F frequency patches, D width):

* ``"all"``: (N, 1 + L, D), the CLS token then the patches, time-major;
* ``"patch"``: (N, L, D), the patch tokens (``"frame"``, its name before 0.2, still works);
* ``"utterance"``: (N, D), the CLS token (``utterance_pooling="cls"``, what EAT's
  fine-tuning uses) or the mean of the patch tokens (``"mean"``);
* ``"time"``: (N, R, D), the mean over the F frequency patches of each time row,
  with timestamps (R,): the centre of row r, ``(P * r + P / 2) * frame_shift``
  seconds (frames [P r, P r + P), P = 16, 10 ms apart).

Waveforms go through the front end the checkpoint was trained with: 16 kHz
Kaldi fbank, zero-padded or cropped to ``target_length`` frames, normalised.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoints import DTYPES, EncoderExport, HeadConfig, Label, load_any
from .features import FbankConfig, compute_fbank, normalize_fbank, resample_to
from .models.classifier import classify, pool
from .models.encoder import AudioEncoder, EncoderConfig

logger = logging.getLogger(__name__)

__all__ = [
    "GRANULARITIES",
    "TimeFeatures",
    "ClipFeatures",
    "ClipWindows",
    "Prediction",
    "PretrainedAudioEncoder",
    "clip_windows",
    "combine_windows",
    "load_encoder",
]

GRANULARITIES = ("patch", "utterance", "all", "time")
_RENAMED_GRANULARITIES = {"frame": "patch"}  # names before 0.2
Waveforms = Union[torch.Tensor, np.ndarray, Sequence[Union[torch.Tensor, np.ndarray]]]


class TimeFeatures(NamedTuple):
    features: torch.Tensor  # (N, R, D)
    timestamps: torch.Tensor  # (R,) seconds, centre of each patch row


class ClipFeatures(NamedTuple):
    """One clip's features from :meth:`PretrainedAudioEncoder.extract_clips`."""

    features: torch.Tensor  # (L', D), (R', D), (D,) or (1 + L', D), by granularity
    timestamps: Optional[torch.Tensor]  # (R',) seconds for "time", else None
    num_frames: int  # fbank frames of the whole clip before padding or cropping


class ClipWindows(NamedTuple):
    fbank: torch.Tensor  # (W, target_length, M) normalised windows
    num_frames: int  # fbank frames of the whole clip


class Prediction(NamedTuple):
    index: int
    label_id: str
    name: str
    score: float


# ------------------------------------------------------------- front end
def _as_tensor(x: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x


def clip_windows(
    waveform: Union[torch.Tensor, np.ndarray],
    sample_rate: int,
    frontend: FbankConfig,
    long_clips: str = "crop",
) -> ClipWindows:
    """Normalised fbank windows of one clip.

    ``"crop"``: one window, the first ``target_length`` frames (zero-padded if
    shorter), exactly what training and :meth:`extract_features` use.
    ``"windows"``: consecutive non-overlapping windows covering the whole clip,
    the last one zero-padded.

    Args:
        waveform: (time,) mono waveform at ``sample_rate``.

    Returns:
        fbank (W, target_length, M) and the clip's frame count.
    """
    if long_clips not in ("crop", "windows"):
        raise ValueError(f"long_clips must be 'crop' or 'windows', got {long_clips!r}")
    wav = _as_tensor(waveform).float()
    if wav.dim() != 1:
        raise ValueError(f"expected a mono (time,) waveform, got shape {tuple(wav.shape)}")
    fbank = compute_fbank(resample_to(wav, sample_rate), frontend)  # (frames, M)
    frames, t = fbank.shape[0], frontend.target_length
    count = max(1, math.ceil(frames / t)) if long_clips == "windows" else 1
    padded = F.pad(fbank[: count * t], (0, 0, 0, max(0, count * t - frames)))  # (W * T, M)
    windows = normalize_fbank(padded, frontend.norm_mean, frontend.norm_std).view(count, t, -1)  # -> (W, T, M)
    return ClipWindows(windows, frames)


def combine_windows(
    tokens: torch.Tensor,
    num_frames: int,
    granularity: str,
    patch_size: int,
    freq_patches: int,
    frame_shift_ms: float,
    utterance_pooling: str = "cls",
    trim_padding: bool = True,
) -> ClipFeatures:
    """One clip's features from the encoder outputs of its windows.

    Args:
        tokens: (W, 1 + R * F, D) encoder outputs of the clip's W windows, in order.
        num_frames: the clip's real frame count; with ``trim_padding`` the rows
            holding only padding (after the clip's end) are dropped.

    Returns:
        "patch": (sum of rows * F, D); "time": (total rows, D) with timestamps;
        "utterance": (D,), the mean over windows of CLS (or of the kept patch
        tokens for ``utterance_pooling="mean"``); "all": (1 + rows * F, D),
        one window only.
    """
    granularity = _check_granularity(granularity, utterance_pooling)
    w, s, d = tokens.shape
    rows = (s - 1) // freq_patches
    window_frames = rows * patch_size
    if granularity == "all" and w > 1:
        raise ValueError(
            "granularity 'all' (CLS + patches) is per window; with long_clips='windows' use 'patch', 'time' or 'utterance'"
        )
    if granularity == "utterance" and utterance_pooling == "cls":
        return ClipFeatures(tokens[:, 0].mean(dim=0), None, num_frames)
    grid = tokens[:, 1:].reshape(w, rows, freq_patches, d)  # (W, 1 + R * F, D) -> (W, R, F, D)
    kept = []
    for i in range(w):
        valid = min(window_frames, max(num_frames - i * window_frames, 1))
        kept.append(grid[i, : math.ceil(valid / patch_size)] if trim_padding else grid[i])
    grid = torch.cat(kept, dim=0)  # (total rows, F, D)
    if granularity == "patch":
        return ClipFeatures(grid.reshape(-1, d), None, num_frames)  # -> (rows * F, D)
    if granularity == "utterance":
        return ClipFeatures(grid.reshape(-1, d).mean(dim=0), None, num_frames)
    if granularity == "time":
        return ClipFeatures(grid.mean(dim=1), row_timestamps(grid.shape[0], patch_size, frame_shift_ms), num_frames)
    return ClipFeatures(torch.cat([tokens[0, :1], grid.reshape(-1, d)], dim=0), None, num_frames)  # "all"


def row_timestamps(rows: int, patch_size: int, frame_shift_ms: float) -> torch.Tensor:
    """(rows,) centre of each patch row in seconds: frames [P r, P r + P) at ``frame_shift_ms``."""
    return (torch.arange(rows, dtype=torch.float64) * patch_size + patch_size / 2) * (frame_shift_ms / 1000.0)


def _check_granularity(granularity: str, utterance_pooling: str) -> str:
    """The granularity's current name (old names are accepted with a warning)."""
    if granularity in _RENAMED_GRANULARITIES:
        logger.warning("granularity %r is now called %r", granularity, _RENAMED_GRANULARITIES[granularity])
        granularity = _RENAMED_GRANULARITIES[granularity]
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if utterance_pooling not in ("cls", "mean"):
        raise ValueError(f"utterance_pooling must be 'cls' or 'mean', got {utterance_pooling!r}")
    return granularity


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
            waveforms: (time,), (N, time), or a list of (time,) clips of any lengths.

        Returns:
            (N, target_length, M) float32 on the CPU.
        """
        clips = self._clip_list(waveforms)
        return torch.stack([clip_windows(c, sample_rate, self.frontend).fbank[0] for c in clips])

    @staticmethod
    def _clip_list(waveforms: Waveforms) -> List[torch.Tensor]:
        if isinstance(waveforms, (torch.Tensor, np.ndarray)):
            wav = _as_tensor(waveforms)
            if wav.dim() == 1:
                return [wav]
            if wav.dim() == 2:
                return list(wav)
            raise ValueError(f"expected a (time,) or (batch, time) waveform, got shape {tuple(wav.shape)}")
        return [_as_tensor(w) for w in waveforms]

    def _to_fbank(self, x: Waveforms, sample_rate: Optional[int]) -> torch.Tensor:
        if sample_rate is not None:
            return self.fbank(x, sample_rate)
        if not isinstance(x, (torch.Tensor, np.ndarray)):
            raise ValueError("pass sample_rate with waveforms; without it the input is read as fbank features")
        fbank = _as_tensor(x)
        if fbank.dim() == 2:
            fbank = fbank.unsqueeze(0)  # (T, M) -> (1, T, M)
        if fbank.dim() == 4 and fbank.shape[1] == 1:
            fbank = fbank[:, 0]  # (N, 1, T, M) -> (N, T, M)
        if fbank.dim() != 3 or fbank.shape[-1] != self.encoder.cfg.num_mel_bins:
            raise ValueError(
                f"without sample_rate the input must be normalised fbank (batch, frames, "
                f"{self.encoder.cfg.num_mel_bins}); got shape {tuple(fbank.shape)}. Pass sample_rate for waveforms."
            )
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
        granularity = _check_granularity(granularity, utterance_pooling)
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
            waveforms: a list of (time,) clips.
            sample_rate: one rate for all, or one per clip.
            long_clips: "crop" to ``target_length`` or "windows" (features concatenated).
            trim_padding: drop the rows that only hold padding.
            batch_size: windows per encoder call.
        """
        rates = [sample_rate] * len(waveforms) if isinstance(sample_rate, int) else list(sample_rate)
        windows = [clip_windows(w, r, self.frontend, long_clips) for w, r in zip(waveforms, rates)]
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
        granularity = _check_granularity(granularity, utterance_pooling)
        if not windows:
            return []
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
        labels = self.labels or [Label(i, f"class_{i}", f"class_{i}") for i in range(scores.shape[1])]
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
    """Load an export folder or a fairseq checkpoint as a :class:`PretrainedAudioEncoder`.

    Args:
        path: an export folder (or its config.json / model.safetensors), or a
            fairseq checkpoint of this plugin or official EAT/SSLAM (pre-trained
            or fine-tuned).
        device: where to put it (default CPU).
        dtype: torch dtype or "float32"/"float16"/"bfloat16" (default float32).
        teacher: for pre-training checkpoints, the EMA teacher instead of the student.
        trust: allow the full unpickler for checkpoints that need it (runs code from the file).
        convert_kwargs: passed to :func:`sslam_plugin.checkpoints.export_from_checkpoint`
            (num_heads, labels_csv, activation, frontend_overrides).

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
