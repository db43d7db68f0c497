#!/usr/bin/env python3
"""Linear evaluation of several encoders on the demo corpus, as one table.

For each ``--encoder NAME=CHECKPOINT`` (an empty CHECKPOINT means a randomly
initialised encoder of the config's architecture, seeded), trains a linear head
with ``fairseq-hydra-train --config-dir config/linear_eval --config-name demo``,
then scores its best checkpoint on the monophonic and polyphonic test splits.
Prints the table and writes it as Markdown and as a PNG bar chart into RUNS.
The numbers are whatever the runs give.

    python scripts/demo_linear_eval.py --data demo_data/manifests --runs demo_data/runs/linear_eval \
        --encoder random= --encoder stage1=.../checkpoint_last.pt --encoder stage2=.../checkpoint_last.pt
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple


from sslam_plugin.evaluation import evaluate_checkpoint

REPO = Path(__file__).resolve().parents[1]
TEST_SPLITS = ("eval_mono", "eval_poly")
logger = logging.getLogger("demo_linear_eval")


def train_linear_head(name: str, checkpoint: str, data: Path, runs: Path, overrides: Sequence[str]) -> Path:
    run_dir = runs / name
    cmd = [
        str(Path(sys.executable).parent / "fairseq-hydra-train"),
        "--config-dir", str(REPO / "config" / "linear_eval"),
        "--config-name", "demo",
        f"task.data={data}",
        f"model.model_path={checkpoint or 'null'}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    logger.info("linear evaluation of %s: %s", name, " ".join(cmd))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with (runs / f"{name}.log").open("w") as log:
        result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        raise SystemExit(f"linear evaluation of {name} failed; see {runs / f'{name}.log'}")
    return run_dir / "checkpoints" / "checkpoint_best.pt"


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
    ax.set_ylabel(f"linear evaluation {metric}")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Demo corpus: linear evaluation")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the demo corpus' manifests folder")
    parser.add_argument("--runs", type=Path, required=True, help="folder for the runs and the results")
    parser.add_argument("--encoder", action="append", required=True, help="NAME=CHECKPOINT (empty: random init)")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run, e.g. optimization.max_update=100")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args.runs.mkdir(parents=True, exist_ok=True)
    data = args.data.resolve()
    rows: List[Tuple[str, Dict[str, float]]] = []
    metric = "mAP"
    for spec in args.encoder:
        name, _, checkpoint = spec.partition("=")
        best = train_linear_head(name, str(Path(checkpoint).resolve()) if checkpoint else "", data, args.runs.resolve(), args.overrides)
        values = {}
        for split in TEST_SPLITS:
            summary = evaluate_checkpoint(best, data, split, out_dir=args.runs / name)
            values[split], metric = float(summary["value"]), str(summary["metric"])
        rows.append((name, values))
    table = markdown_table(rows, metric)
    (args.runs / "results.md").write_text("# Demo corpus: linear evaluation\n\n" + table)
    bar_chart(args.runs / "results.png", rows, metric)
    print("\n" + table)
    print(f"table: {args.runs / 'results.md'}\nchart: {args.runs / 'results.png'}")


if __name__ == "__main__":
    main()
