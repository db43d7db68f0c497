#!/usr/bin/env python3
"""Sound event detection on the demo corpus: event F1 and PSDS for random, stage-1 and stage-2 encoders.

1. Scenes with strong labels: the demo corpus's monophonic clips (one label each) are mixed by the
   polyphony builder (``sslam_plugin.data.polyphony``) into 5.12 s scenes of 1 to 3 sources
   (train / valid from the train and valid clips, eval from eval_mono: disjoint sources). The
   builder places whole source clips; each event is then narrowed to where its source is audible
   (10 ms frames within 30 dB of the source's loudest), since a demo clip holds its sound for only
   part of its 2.6 s. ``{split}_strong.tsv`` follows (``add_polyphony_strong_labels``).
2. For each encoder, a frame head on the frozen encoder is trained with ``config/sed/demo.yaml``
   through fairseq-hydra-train (random: the demo architecture with ``model.model_path=null``).
3. Each run's last checkpoint is scored on the eval scenes (median filter 0.2 s, threshold 0.5):
   event-based and segment-based F1 (sed_eval), PSDS1 and PSDS2 (sed_scores_eval).

The table goes to stdout and OUT/results.{md,json}.

Usage: python scripts/sed_demo.py DEMO_DATA [--out DEMO_DATA/runs/sed] [--stage1 CKPT] [--stage2 CKPT]
           [--train-scenes 400] [--eval-scenes 100] [--max-update 150]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from sslam_plugin.data.labels import clip_id, labels_for_files, read_clip_labels, read_label_descriptors
from sslam_plugin.data.manifest import read_manifest
from sslam_plugin.data.polyphony import EVENTS_HEADER, SceneConfig, build_polyphonic, load_source, read_events
from sslam_plugin.detection.data_folder import add_polyphony_strong_labels
from sslam_plugin.detection.evaluate import evaluate_detector

logger = logging.getLogger("sed_demo")
REPO = Path(__file__).resolve().parents[1]
METRICS = ("event_f1_macro", "event_f1_micro", "segment_f1_macro", "psds1", "psds2")


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


def train(name: str, model_path: Optional[Path], data: Path, runs: Path, max_update: int) -> Path:
    run_dir = runs / name
    cmd = [
        str(Path(sys.executable).parent / "fairseq-hydra-train"), "--config-dir", str(REPO / "config" / "sed"),
        "--config-name", "demo", f"task.data={data}", f"hydra.run.dir={run_dir}",
        f"model.model_path={model_path if model_path else 'null'}", f"optimization.max_update={max_update}",
    ]
    logger.info("training the %s detection head: %s", name, " ".join(cmd[1:]))
    result = subprocess.run(cmd, cwd=runs, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"training {name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return run_dir / "checkpoints" / "checkpoint_last.pt"


def table(results: Dict[str, Dict[str, float]]) -> str:
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
    parser.add_argument("--max-update", type=int, default=150)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    demo = args.demo.resolve()
    out = (args.out or demo / "runs" / "sed").resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = build_scenes(demo, out / "scenes", args.train_scenes, args.eval_scenes)
    encoders = {
        "random": None,
        "stage1": args.stage1 or demo / "runs" / "stage1" / "checkpoints" / "checkpoint_last.pt",
        "stage2": args.stage2 or demo / "runs" / "stage2" / "checkpoints" / "checkpoint_last.pt",
    }
    results: Dict[str, Dict[str, float]] = {}
    settings: tuple = ({}, {})
    for name, path in encoders.items():
        if path is not None and not Path(path).is_file():
            logger.warning("skipping %s: %s not found (run make demo first)", name, path)
            continue
        checkpoint = train(name, Path(path).resolve() if path else None, data, out, args.max_update)
        scored = evaluate_detector(checkpoint, data, "eval", thresholds=0.5, median_window=0.2)
        results[name] = {m: float(scored[m]) for m in METRICS}
        settings = scored["settings"], scored["decoding"]
    text = table(results)
    print(text)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"results": results, "settings": settings[0], "decoding": settings[1]},
                                                 indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
