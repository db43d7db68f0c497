#!/usr/bin/env python3
"""Ablation on the demo corpus: does stage 2's mixing help, at the same number of updates?

One shared stage-1 run (config/pretrain/demo_stage1.yaml), then for each seed
two continuations of its checkpoint (``checkpoint.continue_once``), each for
the same K updates of the same recipe, config/pretrain/demo_stage2.yaml:

* ``sslam``: stage 2 as written (partial mixtures + Source Retention Loss);
* ``mbua``: the paper's MB-UA (Table 3; config/pretrain/stage2_mb_ua.yaml at
  full scale): the same stage-2 schedule on unmixed audio only, i.e. stage-1
  training continued (patch and utterance terms) for as many updates.
  Overrides: ``model.mixing.enabled=false`` and no source-retention weight.

Both arms: the same clips per update (dataset.batch_size), ``common.seed`` and
``model.mixing.seed`` = the seed, ``optimization.max_update=K``,
``model.ema_anneal_end_step=K`` and ``warmup_updates=K/10`` (at K=150 exactly
demo_stage2's values). Equal updates, not equal FLOPs: the sslam student also
encodes the mixtures; each arm's training seconds are in the JSON. The update
counts are read back from each arm's checkpoint and log, and the run stops if
they differ. Then the shared stage-1 checkpoint and both arms are linearly
probed (``sslam_plugin.probe``, probe seed = the seed) on the monophonic and
polyphonic test splits. Results: mean +- sample std over seeds of each arm and
of the paired difference sslam - mbua, and every seed's numbers, in
RUNS/ablation.json, RUNS/ablation.md and RUNS/ablation.png. The numbers are
whatever the runs give.

    python scripts/ablation.py --data demo_data/manifests --runs demo_data/runs/ablation --seeds 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import torch

from sslam_plugin.cli.config_dir import config_dir
from sslam_plugin.inference import load_encoder
from sslam_plugin.probe import ProbeConfig, linear_probe, probe_config, recipe_settings

TEST_SPLITS = ("eval_mono", "eval_poly")
ARMS = ("stage1", "mbua", "sslam")  # the shared start, stage 2 without mixtures, stage 2
ARM_RECIPES = {"mbua": "demo_stage2", "sslam": "demo_stage2"}
# MB-UA: no mixtures, hence no source-retention term to weight and no mixed_fraction to log
MBUA_OVERRIDES = [
    "model.mixing.enabled=false",
    "~criterion.loss_weights.source_retention",
    "criterion.log_keys=[pred_var,target_var,ema_decay,masked_pct]",
]
DEMO_RECIPE = config_dir() / "linear_eval" / "_datasets" / "demo.yaml"
logger = logging.getLogger("ablation")


# ------------------------------------------------------------------ training
def hydra_train(recipe: str, run_dir: Path, overrides: Sequence[str]) -> float:
    """Run ``fairseq-hydra-train`` with a demo pre-training recipe into ``run_dir``; returns its wall seconds."""
    cmd = [
        str(Path(sys.executable).parent / "fairseq-hydra-train"),
        "--config-dir", str(config_dir() / "pretrain"),
        "--config-name", recipe,
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    logger.info("%s", " ".join(cmd))
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with (run_dir / "console.log").open("w") as log:
        result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if result.returncode != 0:
        raise SystemExit(f"{recipe} failed in {run_dir}; see {run_dir / 'console.log'} and hydra_train.log")
    return time.monotonic() - start


def arm_overrides(arm: str, data: Path, stage1: Path, seed: int, updates: int) -> List[str]:
    """The overrides of one arm: the same start, seeds, budget and schedule for both; mbua turns mixing off."""
    overrides = [
        f"task.data={data}",
        f"checkpoint.continue_once={stage1}",
        f"common.seed={seed}",
        f"optimization.max_update={updates}",
        f"model.ema_anneal_end_step={updates}",
        f"optimizer.groups.default.lr_scheduler.warmup_updates={max(1, updates // 10)}",
        f"model.mixing.seed={seed}",
    ]
    return overrides + (MBUA_OVERRIDES if arm == "mbua" else [])


def checkpoint_updates(path: Path) -> int:
    """The update count saved in a fairseq checkpoint."""
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    return int(state["optimizer_history"][-1]["num_updates"])


def logged_updates(log: Path) -> int:
    """The last ``num_updates`` a fairseq training log reports."""
    found = re.findall(r"num_updates[ =](\d+)", log.read_text())
    if not found:
        raise ValueError(f"{log}: no num_updates logged")
    return int(found[-1])


def logged_train_seconds(log: Path) -> float:
    """fairseq's ``done training in X seconds`` (training only, without start-up)."""
    found = re.findall(r"done training in ([\d.]+) seconds", log.read_text())
    return float(found[-1]) if found else float("nan")


def check_equal_updates(run_dirs: Mapping[str, Path], expected: int) -> Dict[str, int]:
    """Each arm's update count from its checkpoint and its log; raises unless all equal ``expected``."""
    counts = {}
    for arm, run_dir in run_dirs.items():
        from_ckpt = checkpoint_updates(run_dir / "checkpoints" / "checkpoint_last.pt")
        from_log = logged_updates(run_dir / "hydra_train.log")
        if from_ckpt != from_log:
            raise RuntimeError(f"{arm}: checkpoint says {from_ckpt} updates, its log {from_log}")
        counts[arm] = from_ckpt
    if set(counts.values()) != {expected}:
        raise RuntimeError(f"the arms did not get {expected} updates each: {counts}")
    return counts


# ---------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def aggregate(per_seed: Mapping[int, Mapping[str, Mapping[str, float]]]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{seed: {arm: {split: value}}} -> {arm or "sslam-mbua": {split: mean, std, n}}; the difference is paired by seed."""
    seeds = sorted(per_seed)
    arms = list(per_seed[seeds[0]])
    splits = list(per_seed[seeds[0]][arms[0]])
    out = {arm: {s: mean_std([per_seed[k][arm][s] for k in seeds]) for s in splits} for arm in arms}
    if "sslam" in arms and "mbua" in arms:
        out["sslam-mbua"] = {s: mean_std([per_seed[k]["sslam"][s] - per_seed[k]["mbua"][s] for k in seeds]) for s in splits}
    return out


def markdown(summary: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str) -> str:
    lines = [
        f"| arm | {' | '.join(f'{s} {metric}' for s in TEST_SPLITS)} |",
        "| --- |" + " --- |" * len(TEST_SPLITS),
    ]
    for arm, splits in summary.items():
        cells = [f"{splits[s]['mean']:+.4f} ± {splits[s]['std']:.4f}" if arm == "sslam-mbua"
                 else f"{splits[s]['mean']:.4f} ± {splits[s]['std']:.4f}" for s in TEST_SPLITS]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(path: Path, per_seed: Mapping[int, Mapping[str, Mapping[str, float]]], summary, metric: str, title: str) -> None:
    """Per split: each arm's seeds as points beside its mean +- std (no bars: the y axis does not start at 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in ARMS if a in summary]
    fig, axes = plt.subplots(1, len(TEST_SPLITS), figsize=(4 * len(TEST_SPLITS), 3.6), sharey=False)
    for ax, split in zip(axes, TEST_SPLITS):
        means = [summary[a][split]["mean"] for a in arms]
        stds = [summary[a][split]["std"] for a in arms]
        colors = ["#777777", "#4f81bd", "#c0504d"]
        for i, arm in enumerate(arms):
            values = [per_seed[k][arm][split] for k in sorted(per_seed)]
            offsets = [(j - (len(values) - 1) / 2) * 0.04 - 0.12 for j in range(len(values))]
            ax.scatter([i + o for o in offsets], values, color=colors[i % 3], s=14, alpha=0.8)
            ax.errorbar(i + 0.12, means[i], yerr=stds[i], fmt="s", color=colors[i % 3], capsize=5, markersize=6)
        low = min(min(per_seed[k][a][split] for k in per_seed) for a in arms)
        high = max(max(per_seed[k][a][split] for k in per_seed) for a in arms)
        pad = max(0.02, (high - low) * 0.3)
        ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))
        ax.set_xticks(range(len(arms)), arms)
        ax.set_title(split)
        ax.set_ylabel(f"linear probe {metric}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the demo corpus' manifests folder")
    parser.add_argument("--runs", type=Path, required=True, help="folder for the runs and the results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--updates", type=int, default=150, help="updates of each arm (K; demo_stage2's 150)")
    parser.add_argument("--stage1-updates", type=int, default=None, help="updates of the shared stage-1 run (default: the recipe's)")
    parser.add_argument("--stage1", type=Path, default=None, help="reuse this stage-1 checkpoint instead of training one")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (none either when stderr is not a terminal)")
    parser.add_argument("probe", nargs="*", help="probe settings, e.g. epochs=50 (sslam_plugin.probe.ProbeConfig)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if len(set(args.seeds)) != len(args.seeds) or args.updates < 1:
        raise SystemExit("error: --seeds must be distinct and --updates positive")
    frontend, _, multilabel = recipe_settings(DEMO_RECIPE)
    try:
        base_probe = probe_config(args.probe, ProbeConfig(multilabel=multilabel))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err
    data, runs = args.data.resolve(), args.runs.resolve()
    runs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    timings: Dict[str, float] = {}
    stage1 = args.stage1.resolve() if args.stage1 else runs / "stage1" / "checkpoints" / "checkpoint_last.pt"
    if args.stage1 is None:
        extra = [f"optimization.max_update={args.stage1_updates}"] if args.stage1_updates else []
        timings["stage1"] = hydra_train("demo_stage1", runs / "stage1", [f"task.data={data}", *extra])

    per_seed: Dict[int, Dict[str, Dict[str, float]]] = {}
    details: Dict[int, Dict[str, object]] = {}
    metric = "mAP" if multilabel else "accuracy"
    for seed in args.seeds:
        run_dirs = {arm: runs / f"seed{seed}" / arm for arm in ARM_RECIPES}
        wall = {arm: hydra_train(ARM_RECIPES[arm], run_dirs[arm], arm_overrides(arm, data, stage1, seed, args.updates))
                for arm in ARM_RECIPES}
        counts = check_equal_updates(run_dirs, args.updates)
        encoders = {"stage1": load_encoder(stage1)}
        encoders.update({arm: load_encoder(d / "checkpoints" / "checkpoint_last.pt") for arm, d in run_dirs.items()})
        probe_start = time.monotonic()
        cfg = dataclasses.replace(base_probe, seed=seed)
        reports = linear_probe(encoders, data, TEST_SPLITS, cfg, frontend=frontend, show_progress=not args.no_progress)
        per_seed[seed] = {arm: {s: reports[arm].splits[s].value for s in TEST_SPLITS} for arm in ARMS}
        details[seed] = {
            "updates": counts,
            "train_seconds": {arm: logged_train_seconds(d / "hydra_train.log") for arm, d in run_dirs.items()},
            "wall_seconds": {**wall, "probe": time.monotonic() - probe_start},
            "best_epoch": {arm: reports[arm].probe.best_epoch for arm in ARMS},
        }
        logger.info("seed %d: %s", seed, json.dumps(per_seed[seed]))

    summary = aggregate(per_seed)
    total = time.monotonic() - started
    title = (f"Demo ablation: {args.updates} updates from one stage-1 checkpoint, "
             f"{len(args.seeds)} seeds (mean ± std, points: seeds)")
    table = markdown(summary, metric)
    result = {
        "updates_per_arm": args.updates,
        "seeds": args.seeds,
        "stage1_checkpoint": str(stage1),
        "metric": metric,
        "probe": {**dataclasses.asdict(base_probe), "seed": "the run's seed"},
        "summary": summary,
        "per_seed": {str(k): v for k, v in per_seed.items()},
        "details": {str(k): v for k, v in details.items()},
        "seconds": {"total": total, **timings},
    }
    (runs / "ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    (runs / "ablation.md").write_text(f"# {title}\n\n{table}")
    plot(runs / "ablation.png", per_seed, summary, metric, title)
    print("\n" + table)
    print(f"results: {runs / 'ablation.json'}\ntable: {runs / 'ablation.md'}\nchart: {runs / 'ablation.png'}")
    print(f"total time: {total / 60:.1f} min")


if __name__ == "__main__":
    main()
