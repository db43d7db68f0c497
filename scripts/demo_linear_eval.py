#!/usr/bin/env python3
"""Linear probes of several encoders on the demo corpus, as one table.

For each ``--encoder NAME=CHECKPOINT`` (an empty CHECKPOINT means a randomly
initialised encoder of the demo's architecture, seeded), embeds every clip of
the demo corpus once with the frozen encoder (pooled CLS token), trains a
linear head on the train split's embeddings (choosing the epoch on valid; see
``sslam_plugin.probe``), and scores it on the monophonic and polyphonic test
splits. Prints the table and writes it as Markdown, JSON and a PNG bar chart
into RUNS, with each encoder's per-class report in RUNS/NAME. The numbers are
whatever the probes give.

The front end (target length, normalisation), the random encoder's
architecture and multi-label scoring come from the demo's linear-evaluation
recipe (config/linear_eval/_datasets/demo.yaml). Neither is the paper protocol:
config/linear_eval/<dataset> recipes, run with fairseq-hydra-train, are (input
augmentation, the frozen encoder re-run in training mode at every update);
this probe is a fast, augmentation-free comparison of encoders.

    python scripts/demo_linear_eval.py --data demo_data/manifests --runs demo_data/runs/linear_eval \\
        --encoder random= --encoder stage1=.../checkpoint_last.pt --encoder stage2=.../checkpoint_last.pt \\
        [epochs=100 batch_size=32 lr=0.001 ...]   # ProbeConfig fields
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sslam_plugin.cli.config_dir import config_dir
from sslam_plugin.data import read_label_descriptors
from sslam_plugin.evaluation import write_split_report
from sslam_plugin.features import FbankConfig
from sslam_plugin.inference import PretrainedAudioEncoder, load_encoder
from sslam_plugin.models.encoder import EncoderConfig
from sslam_plugin.probe import ProbeConfig, linear_probe, probe_config, random_encoder, recipe_settings

TEST_SPLITS = ("eval_mono", "eval_poly")
DEMO_RECIPE = config_dir() / "linear_eval" / "_datasets" / "demo.yaml"
logger = logging.getLogger("demo_linear_eval")


def load_encoders(specs: Sequence[str], architecture: EncoderConfig, frontend: FbankConfig, seed: int) -> Dict[str, PretrainedAudioEncoder]:
    encoders: Dict[str, PretrainedAudioEncoder] = {}
    for spec in specs:
        name, sep, checkpoint = spec.partition("=")
        if not sep or not name or name in encoders:
            raise SystemExit(f"error: --encoder {spec!r}: expected a new NAME=CHECKPOINT (NAME= for a random encoder)")
        encoders[name] = load_encoder(checkpoint) if checkpoint else random_encoder(architecture, frontend, seed)
    return encoders


def markdown_table(rows: List[Tuple[str, Dict[str, float]]], metric: str) -> str:
    lines = [f"| encoder | {' | '.join(f'{s} {metric}' for s in TEST_SPLITS)} |", "| --- |" + " --- |" * len(TEST_SPLITS)]
    for name, values in rows:
        lines.append(f"| {name} | " + " | ".join(f"{values[s]:.4f}" for s in TEST_SPLITS) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(path: Path, rows: List[Tuple[str, Dict[str, float]]], metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(rows)
    for i, (name, values) in enumerate(rows):
        xs = [j + i * width for j in range(len(TEST_SPLITS))]
        bars = ax.bar(xs, [values[s] for s in TEST_SPLITS], width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(TEST_SPLITS))], TEST_SPLITS)
    ax.set_ylabel(f"linear probe {metric}")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Demo corpus: linear probe on frozen encoders")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the demo corpus' manifests folder")
    parser.add_argument("--runs", type=Path, required=True, help="folder for the results")
    parser.add_argument("--encoder", action="append", required=True, help="NAME=CHECKPOINT (empty: random init)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the random encoder, the head's init and the batch order")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (none either when stderr is not a terminal)")
    parser.add_argument("overrides", nargs="*", help="probe settings, e.g. epochs=20 batch_size=16 (sslam_plugin.probe.ProbeConfig)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    frontend, architecture, multilabel = recipe_settings(DEMO_RECIPE)
    try:
        cfg = probe_config(args.overrides, ProbeConfig(multilabel=multilabel, seed=args.seed))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err
    encoders = load_encoders(args.encoder, architecture, frontend, args.seed)
    reports = linear_probe(encoders, args.data, TEST_SPLITS, cfg, frontend=frontend, show_progress=not args.no_progress)

    labels = read_label_descriptors(args.data / "label_descriptors.csv")
    args.runs.mkdir(parents=True, exist_ok=True)
    rows: List[Tuple[str, Dict[str, float]]] = []
    summary: Dict[str, Any] = {"probe": dataclasses.asdict(cfg), "encoders": {}}
    metric = "mAP" if multilabel else "accuracy"
    for spec in args.encoder:
        name = spec.partition("=")[0]
        report = reports[name]
        for split, result in report.splits.items():
            write_split_report(args.runs / name, f"probe_{split}", labels, result, f"{name} on {split}")
        values = {s: report.splits[s].value for s in TEST_SPLITS}
        rows.append((name, values))
        summary["encoders"][name] = {
            "checkpoint": spec.partition("=")[2] or None,
            "best_epoch": report.probe.best_epoch,
            f"valid_{metric}": report.probe.best_valid,
            **{f"{s}_{metric}": v for s, v in values.items()},
        }
    table = markdown_table(rows, metric)
    (args.runs / "results.md").write_text("# Demo corpus: linear probe\n\n" + table)
    (args.runs / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    bar_chart(args.runs / "results.png", rows, metric)
    print("\n" + table)
    print(f"table: {args.runs / 'results.md'}\nchart: {args.runs / 'results.png'}")


if __name__ == "__main__":
    main()
