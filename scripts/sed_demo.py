#!/usr/bin/env python3
"""Sound event detection on the demo corpus: event F1, segment F1 and PSDS for random, stage-1 and stage-2 encoders.

1. Scenes with strong labels: the demo corpus's monophonic clips (one label each) are mixed by the
   polyphony builder (``sslam_plugin.data.polyphony``) into 5.12 s scenes of 1 to 3 sources
   (train / valid from the train and valid clips, eval from eval_mono: disjoint sources). The
   builder places whole source clips; each event is then narrowed to where its source is audible
   (10 ms frames within 30 dB of the source's loudest), since a demo clip holds its sound for only
   part of its 2.6 s. ``{split}_strong.tsv`` follows (``add_polyphony_strong_labels``).
2. For each encoder, the frozen-encoder (linear) variant of the detection model
   (:class:`~sslam_plugin.detection.head.FrameDetector`, ``config/sed/demo.yaml``'s front end,
   40 ms hop and ``row_pooling: concat``): the encoder's patch-row features of every train and
   valid scene are computed once and cached, layer-normalised; the head's linear layer trains on
   them for ``--steps`` full-batch AdamW steps with the library's loss (frame BCE against the
   coverage targets), which takes seconds where re-running the encoder at every update would take
   minutes. The LayerNorm's scale and shift stay at 1 and 0 (before a linear layer they add
   nothing it cannot learn). (``config/sed/demo.yaml`` through fairseq-hydra-train trains the same
   head the slow way.)
3. Decoding settings are chosen on the valid scenes: the median window (``--median-windows``),
   then one threshold per class (``--thresholds``), each maximising that class's event F1.
4. The trained detector is scored on the eval scenes with ``evaluate_detector`` (the encoder run
   again, windows and decoding as ``sslam-detect``): event F1 and segment F1 (sed_eval) at those
   settings, and the threshold-free PSDS1 / PSDS2 (sed_scores_eval).

Each detector is saved as OUT/NAME/detector.pt, a checkpoint that ``sslam-detect``,
``sslam-plot-detection`` and ``load_detector`` read. The table goes to stdout and
OUT/results.{md,json}.

Usage: python scripts/sed_demo.py DEMO_DATA [--out DEMO_DATA/runs/sed] [--stage1 CKPT] [--stage2 CKPT]
           [--train-scenes 400] [--eval-scenes 100] [--steps 1000] [--lr 0.003] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from sslam_plugin.data.audio import load_audio
from sslam_plugin.data.labels import LabelSet, clip_id, labels_for_files, read_clip_labels, read_label_descriptors
from sslam_plugin.data.manifest import read_manifest
from sslam_plugin.data.polyphony import EVENTS_HEADER, SceneConfig, build_polyphonic, load_source, read_events
from sslam_plugin.detection.data_folder import add_polyphony_strong_labels, read_detection_split
from sslam_plugin.detection.decoding import decode
from sslam_plugin.detection.detector import TASK_NAME, SoundEventDetector
from sslam_plugin.detection.evaluate import evaluate_detector
from sslam_plugin.detection.head import FrameDetector, rows_to_frames
from sslam_plugin.detection.scoring import event_metrics
from sslam_plugin.detection.targets import FrameGrid, frame_targets, window_events
from sslam_plugin.features import FbankConfig, compute_fbank, normalize_fbank, pad_or_crop, resample_to
from sslam_plugin.inference import load_encoder
from sslam_plugin.models.encoder import EncoderConfig
from sslam_plugin.probe import recipe_settings
from sslam_plugin.waveform import mono_clip

logger = logging.getLogger("sed_demo")
REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "config" / "sed" / "demo.yaml"
METRICS = ("event_f1_macro", "event_f1_micro", "segment_f1_macro", "psds1", "psds2")
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
MEDIAN_WINDOWS = (0.0, 0.2, 0.4)
HOP = 0.04
ROW_POOLING = "concat"  # config/sed/demo.yaml's: a mean over frequency loses what tells the demo's classes apart


# ------------------------------------------------------------------ scenes
def mono_sources(manifests: Path, splits: Sequence[str], dest: Path) -> Path:
    """A manifest (with .lbl) of the single-label clips of ``splits``."""
    labels = read_label_descriptors(manifests / "label_descriptors.csv")
    lines, lbl = [], []
    for split in splits:
        manifest = read_manifest(manifests / f"{split}.tsv")
        per_clip = labels_for_files(manifest.files, read_clip_labels(manifests / f"{split}.lbl", labels), split)
        for i, (rel, clip_labels) in enumerate(zip(manifest.files, per_clip)):
            if len(clip_labels) == 1:
                lines.append(f"{manifest.full_path(i)}\t{manifest.num_samples[i]}")
                lbl.append(f"{clip_id(rel)}\t{labels.ids[clip_labels[0]]}")
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{'_'.join(splits)}.tsv"
    path.write_text("/\n" + "\n".join(line.lstrip("/") for line in lines) + "\n")
    path.with_suffix(".lbl").write_text("\n".join(lbl) + "\n")
    (dest / "label_descriptors.csv").write_text((manifests / "label_descriptors.csv").read_text())
    return path


def audible_span(wave: np.ndarray, rate: int = 16000, floor_db: float = 30.0) -> tuple:
    """(first, last) seconds of the 10 ms frames within ``floor_db`` of the loudest one."""
    hop = rate // 100
    frames = wave[: len(wave) // hop * hop].reshape(-1, hop)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -floor_db)
    return loud[0] * hop / rate, (loud[-1] + 1) * hop / rate


def narrow_events(folder: Path, split: str, source_root: Path) -> None:
    """Rewrite ``{split}_events.tsv`` with each event cut to its source's audible part."""
    path = folder / f"{split}_events.tsv"
    spans: Dict[str, tuple] = {}
    out = [EVENTS_HEADER]
    for row in read_events(path):
        source = str(row["source"])
        if source not in spans:
            spans[source] = audible_span(load_source(source_root / source))
        first, last = spans[source]
        onset = row["onset_s"] + first
        offset = min(row["onset_s"] + last, row["offset_s"])
        out.append(f"{row['scene']}\t{source}\t{row['label']}\t{onset:.4f}\t{offset:.4f}\t{row['gain_db']:.2f}")
    path.write_text("\n".join(out) + "\n")


def build_scenes(demo: Path, dest: Path, train: int, evaluation: int) -> Path:
    cfg = SceneConfig(scene_seconds=5.12, min_sources=1, max_sources=3, min_level_db=-6.0, max_level_db=0.0)
    sources = dest / "sources"
    for manifest, scenes in (
        (mono_sources(demo / "manifests", ["train", "valid"], sources), {"train": train, "valid": max(20, train // 8)}),
        (mono_sources(demo / "manifests", ["eval_mono"], sources), {"eval": evaluation, "unused": 0}),
    ):
        build_polyphonic(manifest, dest, scenes, cfg, test_fraction=0.2, seed=0, force=True)
    for split in ("train", "valid", "eval"):
        narrow_events(dest, split, Path("/"))
    for leftover in dest.glob("unused*"):  # the second build's empty other side
        if leftover.is_file():
            leftover.unlink()
    add_polyphony_strong_labels(dest, force=True)
    return dest


# ------------------------------------------------------------------ the frozen-encoder detector
def frozen_detector(checkpoint: Optional[Path], architecture: EncoderConfig, frontend: FbankConfig,
                    labels: Sequence[str], seed: int) -> SoundEventDetector:
    """The linear variant: a frozen encoder (a checkpoint's student, or random of the demo's architecture) + a new head."""
    torch.manual_seed(seed)
    encoder = load_encoder(checkpoint).encoder if checkpoint else None
    cfg = encoder.cfg if encoder is not None else architecture
    grid = FrameGrid(window_frames=frontend.target_length, hop=HOP, patch_size=cfg.patch_size)
    model = FrameDetector(cfg, len(labels), frames_per_row=grid.frames_per_row, freeze_encoder=True,
                          row_pooling=ROW_POOLING)
    if encoder is not None:
        model.encoder.load_state_dict(encoder.state_dict(), strict=True)
    return SoundEventDetector(model, frontend, grid, labels).eval()


@torch.no_grad()
def row_features(detector: SoundEventDetector, manifest, batch_size: int = 32) -> torch.Tensor:
    """(N, R, W) patch-row features of every clip of ``manifest`` (one window each, as in ``posteriors``)."""
    frontend, window = detector.frontend, detector.grid.window_frames
    fbanks = []
    for i in range(len(manifest.files)):
        wave, rate = load_audio(manifest.full_path(i))
        fbank = compute_fbank(resample_to(mono_clip(wave, rate), rate), frontend)  # (T, M)
        if fbank.shape[0] > window:
            raise ValueError(f"{manifest.full_path(i)}: longer than one {window}-frame window; the demo's scenes are not")
        fbanks.append(normalize_fbank(pad_or_crop(fbank, window), frontend.norm_mean, frontend.norm_std))
    batch = torch.stack(fbanks).unsqueeze(1)  # (N, 1, T, M)
    return torch.cat([detector.frame_model.row_features(chunk) for chunk in batch.split(batch_size)])


def split_targets(split: Dict[str, object], grid: FrameGrid, labels: Sequence[str]) -> torch.Tensor:
    """(N, F, C) coverage targets of every clip of a detection split."""
    index = {label: i for i, label in enumerate(labels)}
    return torch.stack([
        frame_targets(window_events(events, index, 0.0, grid.window_seconds), grid.num_frames, grid.hop, len(labels))
        for events in split["events"]
    ])


def train_head(model: FrameDetector, features: torch.Tensor, targets: torch.Tensor, steps: int, lr: float,
               weight_decay: float = 1e-4) -> List[float]:
    """Full-batch AdamW on cached (N, R, W) row features: only the head's linear layer trains. Returns the losses.

    The features are layer-normalised once; the model's LayerNorm keeps scale 1 and shift 0, so
    the trained model computes exactly what was trained.
    """
    normed = F.layer_norm(features, model.norm.normalized_shape, eps=model.norm.eps)  # (N, R, W), no affine
    with torch.no_grad():
        model.norm.weight.fill_(1.0)
        model.norm.bias.zero_()
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    losses = []
    for _ in range(steps):
        logits = rows_to_frames(model.head(normed), model.frames_per_row)  # (N, R, W) -> (N, R, C) -> (N, F, C)
        loss = F.binary_cross_entropy_with_logits(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def cached_posteriors(model: FrameDetector, features: torch.Tensor) -> np.ndarray:
    """(N, F, C) frame posteriors from cached row features."""
    return torch.sigmoid(rows_to_frames(model.head(model.norm(features)), model.frames_per_row)).numpy()


def tune_decoding(posteriors: np.ndarray, split: Dict[str, object], labels: Sequence[str], hop: float,
                  durations: Sequence[float], thresholds: Sequence[float] = THRESHOLDS,
                  median_windows: Sequence[float] = MEDIAN_WINDOWS) -> Tuple[float, Dict[str, float]]:
    """(median window, {label: threshold}) maximising event F1 on a split.

    The median window is chosen by macro event F1 at each class's best threshold; a class's F1
    depends only on its own detections, so one sed_eval run per (window, threshold) pair scores
    every class at once. A class never detected at any threshold keeps 0.5.
    """
    reference = {c: e for c, e in zip(split["clip_ids"], split["events"])}
    best: Tuple[float, float, Dict[str, float]] = (-1.0, 0.0, {})
    for window in median_windows:
        per_class = {label: (-1.0, 0.5) for label in labels}
        for threshold in thresholds:
            detected = {c: decode(p[: int(np.ceil(d / hop - 1e-9))], labels, hop, threshold, window, c, d)
                        for c, p, d in zip(split["clip_ids"], posteriors, durations)}
            f1 = event_metrics(reference, detected, labels)["per_class"]
            for label in labels:
                if f1[label] == f1[label] and f1[label] > per_class[label][0]:
                    per_class[label] = (f1[label], threshold)
        mean = float(np.mean([max(f, 0.0) for f, _ in per_class.values()]))
        if mean > best[0]:
            best = (mean, window, {label: t for label, (_, t) in per_class.items()})
    return best[1], best[2]


def save_detector(detector: SoundEventDetector, path: Path) -> None:
    """A checkpoint ``load_detector`` reads: the fairseq checkpoint's keys that it uses, as plain data."""
    frontend, grid, model = detector.frontend, detector.grid, detector.frame_model
    cfg = {
        "task": {"_name": TASK_NAME, "target_length": frontend.target_length, "num_mel_bins": frontend.num_mel_bins,
                 "norm_mean": frontend.norm_mean, "norm_std": frontend.norm_std, "hop": grid.hop},
        "model": {"encoder": dataclasses.asdict(model.encoder.cfg), "row_pooling": model.row_pooling},
    }
    state = {f"detector.{k}": v for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"cfg": cfg, "model": state, "task_state": {"label_ids": list(detector.labels)}}, path)


# ------------------------------------------------------------------ the comparison
def run_encoder(name: str, checkpoint: Optional[Path], data: Path, out: Path, args: argparse.Namespace,
                frontend: FbankConfig, architecture: EncoderConfig) -> Dict[str, object]:
    start = time.perf_counter()
    labels = read_label_descriptors(data / "label_descriptors.csv").ids
    detector = frozen_detector(checkpoint, architecture, frontend, labels, args.seed)
    label_set = LabelSet.from_ids(labels)
    train_split, valid_split = (read_detection_split(data, s, label_set) for s in ("train", "valid"))
    train_x, valid_x = row_features(detector, train_split["manifest"]), row_features(detector, valid_split["manifest"])
    losses = train_head(detector.frame_model, train_x, split_targets(train_split, detector.grid, labels), args.steps, args.lr)
    valid_durations = [n / 16000 for n in valid_split["manifest"].num_samples]
    window, thresholds = tune_decoding(cached_posteriors(detector.frame_model, valid_x), valid_split, labels,
                                       detector.grid.hop, valid_durations)
    scored = evaluate_detector(detector, data, "eval", thresholds=thresholds, median_window=window)
    save_detector(detector, out / name / "detector.pt")
    seconds = time.perf_counter() - start
    logger.info("%s: loss %.4f -> %.4f, median window %.2f s, %.1f s", name, losses[0], losses[-1], window, seconds)
    return {**{m: float(scored[m]) for m in METRICS}, "median_window_s": window, "thresholds": thresholds,
            "final_loss": losses[-1], "seconds": round(seconds, 1), "settings": scored["settings"],
            "checkpoint": str(checkpoint) if checkpoint else None}


def table(results: Dict[str, Dict[str, object]]) -> str:
    lines = ["| encoder | " + " | ".join(METRICS) + " |", "| --- |" + " --- |" * len(METRICS)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[m]:.4f}" for m in METRICS) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo", type=Path, help="the demo corpus (scripts/make_demo_data.py's OUT)")
    parser.add_argument("--out", type=Path, default=None, help="default: DEMO/runs/sed")
    parser.add_argument("--stage1", type=Path, default=None, help="default: DEMO/runs/stage1/checkpoints/checkpoint_last.pt")
    parser.add_argument("--stage2", type=Path, default=None, help="default: DEMO/runs/stage2/checkpoints/checkpoint_last.pt")
    parser.add_argument("--train-scenes", type=int, default=400)
    parser.add_argument("--eval-scenes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=1000, help="full-batch steps of the head on cached features")
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--seed", type=int, default=1, help="seeds the random encoder and the head")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (small tensors: more threads mostly contend, on a shared machine badly)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    demo = args.demo.resolve()
    out = (args.out or demo / "runs" / "sed").resolve()
    if not (demo / "manifests" / "train.tsv").is_file():
        print(f"error: {demo}: no demo corpus (manifests/train.tsv); make demo-data writes it", file=sys.stderr)
        return 2
    for name, given in (("stage1", args.stage1), ("stage2", args.stage2)):
        if given is not None and not given.is_file():
            print(f"error: --{name} {given}: checkpoint not found (make demo writes it)", file=sys.stderr)
            return 2
    encoders = {
        "random": None,
        "stage1": args.stage1 or demo / "runs" / "stage1" / "checkpoints" / "checkpoint_last.pt",
        "stage2": args.stage2 or demo / "runs" / "stage2" / "checkpoints" / "checkpoint_last.pt",
    }
    start = time.perf_counter()
    data = build_scenes(demo, out / "scenes", args.train_scenes, args.eval_scenes)
    frontend, architecture, _ = recipe_settings(RECIPE)
    results: Dict[str, Dict[str, object]] = {}
    for name, path in encoders.items():
        if path is not None and not Path(path).is_file():
            logger.warning("skipping %s: %s not found (run make demo first)", name, path)
            continue
        results[name] = run_encoder(name, Path(path).resolve() if path else None, data, out, args, frontend, architecture)
    text = table(results)
    print(text)
    print(f"({len(results)} encoders, {time.perf_counter() - start:.0f} s; detectors and results in {out})")
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(
        {"results": results, "steps": args.steps, "lr": args.lr, "train_scenes": args.train_scenes,
         "eval_scenes": args.eval_scenes}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
