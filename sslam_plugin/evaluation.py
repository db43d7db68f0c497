"""Scoring a classifier on a labelled split, and reporting per-class results.

Dimensions: N = clips, C = classes.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch

from .data import LabelSet, Manifest, labels_for_files, multi_hot, read_clip_labels, read_label_descriptors, read_manifest
from .data.robust import RobustClipReader
from .features import FbankConfig
from .metrics import accuracy, mean_average_precision
from .progress import progress_bar

logger = logging.getLogger(__name__)

__all__ = [
    "SplitResult",
    "evaluate_checkpoint",
    "labelled_targets",
    "predict_manifest",
    "score_split",
    "write_per_class_csv",
    "plot_per_class",
    "write_split_report",
]


@dataclass
class SplitResult:
    metric: str  # "mAP" or "accuracy"
    value: float
    per_class_ap: torch.Tensor  # (C,) float64, NaN where a class has no positive clip
    scores: torch.Tensor  # (N, C) logits
    targets: torch.Tensor  # (N, C) multi-hot


def labelled_targets(manifest: Manifest, lbl_path: Union[str, Path], labels: LabelSet) -> torch.Tensor:
    """(N, C) multi-hot targets of the manifest's clips, in manifest order."""
    indices = labels_for_files(manifest.files, read_clip_labels(lbl_path, labels), str(lbl_path), root=manifest.root)
    return torch.stack([multi_hot(i, len(labels)) for i in indices])


@torch.no_grad()
def predict_manifest(
    model: Callable[[torch.Tensor], torch.Tensor],
    manifest: Manifest,
    fbank: FbankConfig,
    batch_size: int = 16,
    device: Union[str, torch.device] = "cpu",
    show_progress: bool = False,
) -> torch.Tensor:
    """Logits of every clip of ``manifest``: ``model`` maps (B, 1, T, M) features to (B, C).

    An unreadable clip is scored as silence and logged, so one bad file does
    not stop an evaluation (its label still counts). ``show_progress``: a bar
    on stderr when it is a terminal (:mod:`sslam_plugin.progress`).
    """
    outputs: List[torch.Tensor] = []
    batch: List[torch.Tensor] = []
    reader = RobustClipReader(manifest, fbank, policy="silence")
    with progress_bar(len(manifest), "scoring clips", "clip", show_progress) as bar:
        for index in range(len(manifest)):
            batch.append(reader.read(index).features)
            if len(batch) == batch_size or index == len(manifest) - 1:
                x = torch.stack(batch).unsqueeze(1).to(device)  # (B, T, M) -> (B, 1, T, M)
                outputs.append(model(x).float().cpu())
                bar.update(len(batch))
                batch = []
    return torch.cat(outputs) if outputs else torch.zeros(0, 0)


def score_split(scores: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> SplitResult:
    """mAP (multi-label) or top-1 accuracy (single-label) over the whole split."""
    map_value, per_class = mean_average_precision(scores, targets)
    if multilabel:
        return SplitResult("mAP", map_value, per_class, scores, targets)
    return SplitResult("accuracy", accuracy(scores, targets), per_class, scores, targets)


def write_per_class_csv(path: Union[str, Path], labels: LabelSet, per_class_ap: torch.Tensor, targets: torch.Tensor) -> None:
    """``index,label_id,display_name,positives,average_precision`` per class."""
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "label_id", "display_name", "positives", "average_precision"])
        positives = (targets > 0.5).sum(dim=0)
        for i, (label_id, name) in enumerate(zip(labels.ids, labels.names)):
            ap = float(per_class_ap[i])
            writer.writerow([i, label_id, name, int(positives[i]), "" if ap != ap else f"{ap:.6f}"])


def plot_per_class(
    path: Union[str, Path], labels: LabelSet, per_class_ap: torch.Tensor, count: int = 10, title: Optional[str] = None
) -> None:
    """Horizontal bar chart of the ``count`` best and ``count`` worst classes by AP (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    valid = [(float(ap), labels.names[i]) for i, ap in enumerate(per_class_ap) if ap == ap]
    valid.sort()
    shown: Sequence = valid if len(valid) <= 2 * count else valid[:count] + valid[-count:]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(shown) + 1.5))
    ax.barh([name for _, name in shown], [ap for ap, _ in shown], color=["#c0504d" if ap < 0.5 else "#4f81bd" for ap, _ in shown])
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision")
    ax.set_title(title or f"Per-class AP ({'all' if len(shown) == len(valid) else f'worst and best {count}'})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_split_report(
    out_dir: Union[str, Path], stem: str, labels: LabelSet, result: SplitResult, title: str
) -> Dict[str, Path]:
    """``{stem}_per_class_ap.csv`` and ``.png`` in ``out_dir``; returns their paths as ``csv`` and ``png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / f"{stem}_per_class_ap.csv", "png": out_dir / f"{stem}_per_class_ap.png"}
    write_per_class_csv(paths["csv"], labels, result.per_class_ap, result.targets)
    plot_per_class(paths["png"], labels, result.per_class_ap, title=f"{title}: {result.metric} {result.value:.4f}")
    return paths


def evaluate_checkpoint(
    checkpoint: Union[str, Path],
    data: Union[str, Path],
    split: str,
    out_dir: Optional[Path] = None,
    batch_size: int = 16,
    device: Optional[str] = None,
    trust: bool = False,
    show_progress: bool = False,
) -> Dict[str, object]:
    """Score ``checkpoint`` on ``data/split`` and write the per-class report; returns a summary.

    Writes ``{checkpoint stem}_{split}_per_class_ap.csv`` and ``.png`` into
    ``out_dir`` (default: the checkpoint's folder).
    """
    checkpoint, data = Path(checkpoint), Path(data)
    from .inference import load_encoder

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_encoder(checkpoint, device=device, trust=trust)
    if model.head_config is None:
        raise ValueError(f"{checkpoint}: no classification head; evaluate a fine-tuned or linear-eval checkpoint")
    labels = read_label_descriptors(data / "label_descriptors.csv")
    if len(labels) != model.head_config.num_classes:
        raise ValueError(
            f"{checkpoint} predicts {model.head_config.num_classes} classes but "
            f"{data / 'label_descriptors.csv'} lists {len(labels)}"
        )
    if model.labels and [lab.id for lab in model.labels] != list(labels.ids):
        raise ValueError(f"{checkpoint} was trained with another label order than {data / 'label_descriptors.csv'}")
    manifest = read_manifest(data / f"{split}.tsv")
    targets = labelled_targets(manifest, data / f"{split}.lbl", labels)
    scores = predict_manifest(model.logits, manifest, model.frontend, batch_size, device, show_progress)
    result: SplitResult = score_split(scores, targets, multilabel=model.head_config.activation == "sigmoid")
    paths = write_split_report(out_dir or checkpoint.parent, f"{checkpoint.stem}_{split}", labels, result, f"{checkpoint.name} on {split}")
    return {
        "checkpoint": str(checkpoint),
        "split": split,
        "clips": len(manifest),
        "metric": result.metric,
        "value": result.value,
        "per_class_csv": str(paths["csv"]),
        "chart": str(paths["png"]),
    }
