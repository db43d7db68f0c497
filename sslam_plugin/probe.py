"""Linear probe on a frozen encoder: clip embeddings extracted once, a linear head trained on them.

The fairseq linear evaluation (``config/linear_eval``, the paper's protocol)
runs the frozen encoder at every update, because its augmentations (mixup,
SpecAugment, roll) act on the input and the official runs keep the encoder in
training mode (stochastic depth on). Without input augmentation a frozen
encoder in eval mode gives every clip the same pooled embedding at every
epoch, so here it is computed once per clip and the head (``fc_norm`` +
``Linear``, as :class:`~sslam_plugin.models.classifier.AudioClassifier`) is
trained on the cached (N, D) embeddings with the linear-evaluation task's loss
(BCE for multi-label, cross-entropy for single-label), Adam and a warmup +
cosine lr schedule, choosing the epoch with the best validation metric (as
fairseq's ``checkpoint_best.pt``). Everything is seeded: the head's
initialisation and the minibatch order come from ``ProbeConfig.seed``.

Numbers from here and from the fairseq protocol are not interchangeable (no
augmentation here); use ``config/linear_eval`` for paper comparisons and this
for quick, repeatable comparisons of encoders (the demo, the ablation).

Dimensions: N = clips, T = frames, M = mel bins, D = width, C = classes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config_utils import dataclass_from_dict
from .data import Manifest, read_label_descriptors, read_manifest
from .vocabulary import parse_pooling
from .data.robust import RobustClipReader
from .evaluation import SplitResult, labelled_targets, score_split
from .features import FbankConfig
from .inference import PretrainedAudioEncoder
from .models.classifier import classification_head, classify
from .models.encoder import EncoderConfig
from .progress import progress, progress_bar

logger = logging.getLogger(__name__)

__all__ = [
    "ProbeConfig",
    "probe_config",
    "LinearHead",
    "ProbeResult",
    "ProbeReport",
    "classification_loss",
    "epoch_order",
    "lr_at",
    "extract_embeddings",
    "random_encoder",
    "recipe_settings",
    "train_head",
    "fit_linear_probe",
    "linear_probe",
]


@dataclass(frozen=True)
class ProbeConfig:
    """How the head is trained (defaults: config/linear_eval/demo.yaml's optimiser, more epochs)."""

    multilabel: bool = True  # BCE + mAP; False: cross-entropy + accuracy
    pooling: str = "cls"  # clip embedding: the CLS token, or the mean of the patch tokens
    use_fc_norm: bool = True  # LayerNorm on the embedding before the head (trained with it)
    epochs: int = 100
    batch_size: int = 32  # 0: the whole training split in each update
    lr: float = 1e-3
    adam_betas: Tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_updates: int = 20
    min_lr: float = 1e-6
    seed: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "pooling", parse_pooling(self.pooling))  # frozen: set once, checked
        if self.epochs < 1 or self.batch_size < 0 or self.lr <= 0:
            raise ValueError(f"need epochs >= 1, batch_size >= 0 and lr > 0; got {self.epochs}, {self.batch_size}, {self.lr}")


def probe_config(overrides: Sequence[str], base: ProbeConfig = ProbeConfig()) -> ProbeConfig:
    """``base`` with ``KEY=VALUE`` fields replaced (e.g. ``epochs=20 batch_size=8``); values are read as JSON where they parse."""
    names = [f.name for f in dataclasses.fields(ProbeConfig)]
    values: Dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key not in names:
            raise ValueError(f"{item!r} is not KEY=VALUE for one of the probe settings: {', '.join(names)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare word, e.g. pooling=mean
        values[key] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(base, **values)


class LinearHead(nn.Module):
    """``head(fc_norm(x))``: (N, D) embeddings -> (N, C) logits, initialised as the classifier's head."""

    def __init__(self, dim: int, num_classes: int, use_fc_norm: bool = True, seed: int = 1):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)  # its own generator: the global one is left alone
        self.fc_norm, self.head = classification_head(dim, num_classes, use_fc_norm, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return classify(x, self.fc_norm, self.head)


@dataclass
class ProbeResult:
    head: LinearHead  # at the best validation epoch (the last epoch without a validation split)
    best_epoch: int
    best_valid: float  # NaN without a validation split
    train_loss: List[float] = field(default_factory=list)  # mean per epoch
    valid_curve: List[float] = field(default_factory=list)  # the validation metric per epoch


@dataclass
class ProbeReport:
    probe: ProbeResult
    splits: Dict[str, SplitResult]  # the test splits' scores


# ------------------------------------------------------------------ training
def classification_loss(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """The linear-evaluation criterion's loss, per clip.

    ``sslam_classification`` sums BCE over classes and clips (multi-label) or
    cross-entropy over clips, and fairseq divides the gradient by the clips in
    the batch; this is that sum divided by N.

    Args:
        logits: (N, C).
        targets: (N, C) multi-hot (multi-label) or one-hot / soft (single-label).
    """
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / logits.shape[0]
    return F.cross_entropy(logits, targets, reduction="sum") / logits.shape[0]


def epoch_order(num_clips: int, seed: int, epoch: int) -> torch.Tensor:
    """(num_clips,) the order clips are visited in ``epoch`` (1, 2, ...): a permutation from (seed, epoch)."""
    return torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(num_clips))


def lr_at(update: int, total_updates: int, cfg: ProbeConfig) -> float:
    """The lr of update ``update`` (0-based) of ``total_updates``: fairseq's ``cosine`` schedule.

    Linear warmup from ``min_lr`` to ``lr`` over ``warmup_updates``, then half a
    cosine from ``lr`` down to ``min_lr`` at ``total_updates``.
    """
    warmup = min(cfg.warmup_updates, max(total_updates - 1, 0))
    if update < warmup:
        return cfg.min_lr + update * (cfg.lr - cfg.min_lr) / warmup
    span = max(total_updates - warmup, 1)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * (update - warmup) / span))


def _metric(scores: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> float:
    return score_split(scores, targets, multilabel).value


def train_head(
    head: LinearHead,
    embed: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    cfg: ProbeConfig,
    valid: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    show_progress: bool = False,
) -> ProbeResult:
    """Train ``head`` in place with Adam on minibatches of the training clips.

    Args:
        embed: (B,) clip indices -> (B, D) embeddings; a lookup in cached
            embeddings, or (in the tests) the frozen encoder itself.
        targets: (N, C) training targets.
        valid: (V, D) embeddings and (V, C) targets scored after every epoch; the
            head of the best epoch is returned (the first one on ties).
    """
    threads = torch.get_num_threads()
    # (batch, D) x (D, C) products are too small to split: extra threads only
    # add synchronisation, which made training 10x slower on a busy 2-core machine
    torch.set_num_threads(1)
    try:
        return _train_head(head, embed, targets, cfg, valid, show_progress)
    finally:
        torch.set_num_threads(threads)


def _train_head(
    head: LinearHead,
    embed: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    cfg: ProbeConfig,
    valid: Optional[Tuple[torch.Tensor, torch.Tensor]],
    show_progress: bool,
) -> ProbeResult:
    n = targets.shape[0]
    batch = cfg.batch_size or n
    per_epoch = math.ceil(n / batch)
    total = per_epoch * cfg.epochs
    optimizer = torch.optim.Adam(head.parameters(), lr=cfg.lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay)
    result = ProbeResult(head, best_epoch=0, best_valid=float("nan"))
    best_state = None
    update = 0
    for epoch in progress(range(1, cfg.epochs + 1), cfg.epochs, "linear probe", show_progress, unit="epoch"):
        head.train()
        losses = []
        for idx in epoch_order(n, cfg.seed, epoch).split(batch):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(update, total, cfg)
            loss = classification_loss(head(embed(idx)), targets[idx], cfg.multilabel)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            update += 1
        result.train_loss.append(sum(losses) / len(losses))
        if valid is None:
            continue
        head.eval()
        with torch.no_grad():
            value = _metric(head(valid[0]), valid[1], cfg.multilabel)
        result.valid_curve.append(value)
        if best_state is None or value > result.best_valid:
            result.best_epoch, result.best_valid = epoch, value
            best_state = copy.deepcopy(head.state_dict())
    if best_state is not None:
        head.load_state_dict(best_state)
    else:
        result.best_epoch = cfg.epochs
    head.eval()
    return result


def fit_linear_probe(
    features: torch.Tensor,
    targets: torch.Tensor,
    cfg: ProbeConfig = ProbeConfig(),
    valid: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    show_progress: bool = False,
) -> ProbeResult:
    """A new :class:`LinearHead` trained on cached embeddings.

    Args:
        features: (N, D) training embeddings.
        targets: (N, C) training targets.
        valid: optional (V, D) embeddings and (V, C) targets for choosing the epoch.
    """
    if features.dim() != 2 or targets.dim() != 2 or features.shape[0] != targets.shape[0]:
        raise ValueError(f"expected (N, D) features and (N, C) targets, got {tuple(features.shape)} and {tuple(targets.shape)}")
    features, targets = features.float(), targets.float()
    head = LinearHead(features.shape[1], targets.shape[1], cfg.use_fc_norm, cfg.seed)
    if valid is not None:
        valid = (valid[0].float(), valid[1].float())
    return train_head(head, lambda idx: features[idx], targets, cfg, valid, show_progress)


# ---------------------------------------------------------------- embeddings
def random_encoder(encoder: EncoderConfig, frontend: FbankConfig, seed: int = 1) -> PretrainedAudioEncoder:
    """A randomly initialised encoder (the baseline of a linear evaluation), the same for the same seed."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's global generator as it was
        torch.manual_seed(seed)
        return PretrainedAudioEncoder(encoder, frontend).eval()


def recipe_settings(recipe: Union[str, Path]) -> Tuple[FbankConfig, EncoderConfig, bool]:
    """(front end, architecture for a random encoder, multi-label) of a linear-evaluation recipe file.

    Reads ``task.target_length``, ``task.norm_mean``, ``task.norm_std``,
    ``task.multilabel`` and ``model.encoder`` of one YAML file (e.g.
    ``config/linear_eval/_datasets/demo.yaml``), so a probe uses the settings
    the fairseq protocol would; keys the file leaves out keep their defaults.
    """
    from omegaconf import OmegaConf  # only here: the rest of the module needs no config library

    cfg = OmegaConf.to_container(OmegaConf.load(recipe), resolve=True)
    task, model = cfg.get("task", {}), cfg.get("model", {})
    defaults = FbankConfig()
    frontend = FbankConfig(
        target_length=task.get("target_length", defaults.target_length),
        num_mel_bins=task.get("num_mel_bins", defaults.num_mel_bins),
        norm_mean=task.get("norm_mean", defaults.norm_mean),
        norm_std=task.get("norm_std", defaults.norm_std),
    )
    return frontend, dataclass_from_dict(EncoderConfig, model.get("encoder", {})), bool(task.get("multilabel", True))


@torch.no_grad()
def extract_embeddings(
    encoders: Mapping[str, PretrainedAudioEncoder],
    manifest: Manifest,
    frontend: FbankConfig,
    pooling: str = "cls",
    batch_size: int = 32,
    show_progress: bool = False,
    desc: str = "embedding clips",
) -> Dict[str, torch.Tensor]:
    """Pooled clip embeddings of every clip of ``manifest`` from each encoder, in manifest order.

    Each clip is read and turned into fbank once, whatever the number of
    encoders; only the (N, D) embeddings are kept. An unreadable clip is
    embedded as silence and logged (as in :func:`~sslam_plugin.evaluation.predict_manifest`).

    Returns:
        {name: (N, D) float32 embeddings on the CPU}.
    """
    pooling = parse_pooling(pooling)
    reader = RobustClipReader(manifest, frontend, policy="silence")
    outputs: Dict[str, List[torch.Tensor]] = {name: [] for name in encoders}
    bar = progress_bar(len(manifest), desc, "clip", show_progress)
    try:
        for start in range(0, len(manifest), batch_size):
            indices = range(start, min(start + batch_size, len(manifest)))
            fbank = torch.stack([reader.read(i).features for i in indices])  # (B, T, M)
            for name, encoder in encoders.items():
                pooled = encoder.extract_features(fbank, granularity="utterance", utterance_pooling=pooling)  # (B, D)
                outputs[name].append(pooled.float().cpu())
            bar.update(len(indices))
    finally:
        bar.close()
    return {name: torch.cat(chunks) for name, chunks in outputs.items()}


def linear_probe(
    encoders: Mapping[str, PretrainedAudioEncoder],
    data: Union[str, Path],
    test_splits: Sequence[str],
    cfg: ProbeConfig = ProbeConfig(),
    frontend: Optional[FbankConfig] = None,
    train_split: str = "train",
    valid_split: Optional[str] = "valid",
    batch_size: int = 32,
    show_progress: bool = False,
) -> Dict[str, ProbeReport]:
    """Linear probes of several encoders on one labelled data folder.

    Embeds each split once for all encoders, fits one head per encoder on
    ``train_split`` (choosing the epoch on ``valid_split``; None: the last) and
    scores ``test_splits``.

    Args:
        data: folder with {split}.tsv, {split}.lbl and label_descriptors.csv.
        frontend: the fbank every encoder gets (default: the first encoder's).

    Returns:
        {encoder name: :class:`ProbeReport`}.
    """
    if not encoders:
        raise ValueError("no encoders to probe")
    data = Path(data)
    frontend = frontend or next(iter(encoders.values())).frontend
    labels = read_label_descriptors(data / "label_descriptors.csv")
    splits = [train_split] + ([valid_split] if valid_split else []) + [s for s in test_splits if s not in (train_split, valid_split)]
    embeddings: Dict[str, Dict[str, torch.Tensor]] = {}
    targets: Dict[str, torch.Tensor] = {}
    for split in splits:
        manifest = read_manifest(data / f"{split}.tsv")
        targets[split] = labelled_targets(manifest, data / f"{split}.lbl", labels).float()
        embeddings[split] = extract_embeddings(encoders, manifest, frontend, cfg.pooling, batch_size, show_progress, split)
        logger.info("%s: %d clips embedded by %d encoders", split, len(manifest), len(encoders))
    reports: Dict[str, ProbeReport] = {}
    for name in encoders:
        valid = (embeddings[valid_split][name], targets[valid_split]) if valid_split else None
        fitted = fit_linear_probe(embeddings[train_split][name], targets[train_split], cfg, valid, show_progress)
        with torch.no_grad():
            scored = {s: score_split(fitted.head(embeddings[s][name]), targets[s], cfg.multilabel) for s in test_splits}
        logger.info(
            "%s: best epoch %d (valid %.4f); %s", name, fitted.best_epoch, fitted.best_valid,
            ", ".join(f"{s} {r.metric} {r.value:.4f}" for s, r in scored.items()),
        )
        reports[name] = ProbeReport(fitted, scored)
    return reports
