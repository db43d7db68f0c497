"""Plot a run's training curves from its log: every loss term, collapse signals, learning rate.

    sslam-plot-training runs/eat_stage1                       # -> runs/eat_stage1/training_curves.png
    sslam-plot-training runs/stage1/hydra_train.log -o s1.png --keys gnorm ema_decay
    sslam-plot-training runs/stage1 runs/stage2 --labels stage1 stage2 -o both.png   # overlaid

Reads fairseq's per-update ``train_inner`` lines of ``hydra_train.log`` (the
run folder, or the log itself; ``common.log_format`` simple or json) and draws
one panel per loss term (``loss``, ``loss_patch``, ``loss_utterance``, stage 2's
``loss_patch_mixed``, ``loss_utterance_mixed``, ``loss_source_retention``; a
classification run's ``loss``), ``pred_var`` with ``target_var`` (a fall
towards 0 signals collapse), the learning rate, any ``--keys``, and the
validation results of fine-tuning and linear evaluation (loss, mAP, accuracy).
Several runs share the panels, one colour each.

fairseq logs one ``train_inner`` line every ``common.log_interval`` updates: a
run shorter than that (the demo recipes log every 10) has nothing to plot, and
the command says to lower it (``common.log_interval=1``).

Exit status: 0, 1 when a log cannot be read or holds nothing to plot, 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from sslam_plugin.cli import UsageError, fail
from sslam_plugin.training_log import TrainingLog, find_training_log, read_training_log

__all__ = ["Panel", "panels_for", "plot_training_logs", "main"]

DEFAULT_NAME = "training_curves.png"
COLLAPSE_KEYS = ("pred_var", "target_var")
# validation values that describe the batch or the clock, not the model
VALID_BOOKKEEPING = {"sample_size", "wps", "wpb", "bsz", "ups", "wall", "train_wall"}
# the pre-training terms in the order the method builds them; other loss keys follow in log order
LOSS_ORDER = ("loss", "loss_patch", "loss_utterance", "loss_patch_mixed", "loss_utterance_mixed", "loss_source_retention")
MAX_LR_LINES = 3  # beyond this (layer-decayed groups: lr_block_0, lr_block_1, ...) the largest and smallest lr are drawn

Line = Tuple[str, List[Tuple[int, float]]]  # (legend name, (update, value) pairs)


class Panel:
    """One subplot: a title and, per run, named lines."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.lines: Dict[int, List[Line]] = {}  # run index -> lines

    def add(self, run: int, name: str, points: List[Tuple[int, float]]) -> None:
        if points:
            self.lines.setdefault(run, []).append((name, points))


def _is_loss(key: str) -> bool:
    return key == "loss" or key.startswith("loss_")


def _lr_label(key: str) -> str:
    """``lr_block_3`` -> ``block_3``; an older log's hashed group name (``lr_2484968c...``) -> ``group 248496``."""
    name = key[3:] or "lr"
    return f"group {name[:6]}" if re.fullmatch(r"[0-9a-f]{32}", name) else name


def _lr_lines(log: TrainingLog) -> List[Line]:
    keys = [k for k in log.train if k == "lr" or k.startswith("lr_")]
    if len(keys) <= MAX_LR_LINES:
        return [(_lr_label(k), log.series(k)) for k in keys]
    by_update: Dict[int, List[float]] = {}
    for key in keys:
        for update, value in log.series(key):
            by_update.setdefault(update, []).append(value)
    updates = sorted(by_update)
    return [
        (f"largest of {len(keys)} groups", [(u, max(by_update[u])) for u in updates]),
        (f"smallest of {len(keys)} groups", [(u, min(by_update[u])) for u in updates]),
    ]


def panels_for(logs: Sequence[TrainingLog], extra_keys: Sequence[str] = ()) -> List[Panel]:
    """The panels to draw for these runs, in order; panels no run has a value for are left out."""
    panels: Dict[str, Panel] = {}

    def panel(title: str) -> Panel:
        return panels.setdefault(title, Panel(title))

    loss_keys: List[str] = []
    for log in logs:
        loss_keys += [k for k in log.train if _is_loss(k) and k not in loss_keys]
    loss_keys.sort(key=lambda k: LOSS_ORDER.index(k) if k in LOSS_ORDER else len(LOSS_ORDER))  # stable
    for key in loss_keys:
        panel(key)
    for run, log in enumerate(logs):
        for key in loss_keys:
            panels[key].add(run, key, log.series(key))
        for key in COLLAPSE_KEYS:
            panel("pred_var / target_var (collapse)").add(run, key, log.series(key))
        for name, points in _lr_lines(log):
            panel("learning rate").add(run, name, points)
        for key in extra_keys:
            panel(key).add(run, key, log.series(key))
        for subset, series in log.valid.items():
            for key, values in series.items():
                if key not in VALID_BOOKKEEPING and not key.startswith("best_"):
                    panel(f"valid {key}").add(run, subset, sorted(values.items()))
    return [p for p in panels.values() if p.lines]


def plot_training_logs(
    logs: Sequence[TrainingLog],
    output: Path,
    labels: Optional[Sequence[str]] = None,
    extra_keys: Sequence[str] = (),
    log_y: bool = False,
) -> List[str]:
    """Draw the runs' panels into a PNG at ``output``; returns the panel titles.

    ``labels``: one legend name per run (default: the log's folder name).
    ``log_y``: loss panels on a logarithmic axis.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed (clusters, CI)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    labels = list(labels) if labels else [log.path.parent.name or str(log.path) for log in logs]
    if len(labels) != len(logs):
        raise ValueError(f"{len(labels)} labels for {len(logs)} runs")
    panels = panels_for(logs, extra_keys)
    if not panels:
        raise ValueError("nothing to plot: the logs hold no train_inner values")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    for ax, panel in zip(axes.flat, panels):
        for run, lines in panel.lines.items():
            for number, (name, points) in enumerate(lines):
                updates, values = zip(*points)
                legend = name if len(logs) == 1 else f"{labels[run]}: {name}"
                ax.plot(
                    updates,
                    values,
                    color=colours[run % len(colours)] if len(logs) > 1 else colours[number % len(colours)],
                    linestyle=styles[number % len(styles)] if len(logs) > 1 else "-",
                    marker="o" if len(points) <= 30 else None,  # a short run is a few dots, not a line
                    markersize=3,
                    linewidth=1.2,
                    label=legend,
                )
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("update")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # updates are whole numbers
        updates_drawn = {u for lines in panel.lines.values() for _, points in lines for u, _ in points}
        if len(updates_drawn) == 1:  # one validation so far: the locator would invent fractional ticks
            ax.set_xticks(sorted(updates_drawn))
        ax.grid(alpha=0.3)
        if log_y and (_is_loss(panel.title) or panel.title == "valid loss"):
            ax.set_yscale("log")
        if len(logs) > 1 or sum(len(lines) for lines in panel.lines.values()) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(", ".join(labels), fontsize=11)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return [p.title for p in panels]


_UPDATE_MENTIONS = re.compile(r"num_updates[= ](\d+)|@ (\d+) updates")


def run_log_settings(log_path: Path) -> Dict[str, object]:
    """``common.log_interval`` and ``common.log_format`` of the run, from hydra's ``.hydra/config.yaml`` beside the log."""
    import yaml

    try:
        config = yaml.safe_load((log_path.parent / ".hydra" / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    common = config.get("common") or {}
    return {k: common[k] for k in ("log_interval", "log_format") if k in common}


def updates_done(log_path: Path) -> Optional[int]:
    """The last update any line of the log mentions (validation, checkpoint, epoch summary), if any."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    found = [int(a or b) for a, b in _UPDATE_MENTIONS.findall(text)]
    return max(found) if found else None


def too_short_advice(log: TrainingLog) -> str:
    """Why a log has fewer than two train_inner lines, and what to change."""
    settings = run_log_settings(log.path)
    interval, fmt = settings.get("log_interval"), settings.get("log_format")
    done = updates_done(log.path)
    every = f"common.log_interval={interval}" if interval is not None else "common.log_interval"
    if fmt == "tqdm":
        return "common.log_format=tqdm only updates a progress bar; run with common.log_format=simple (or json)"
    ran = f"the run logged {done} updates and " if done is not None else ""
    return (
        f"{ran}fairseq writes one train_inner line every {every} updates (with common.log_format simple or json); "
        "for a short run, lower it, e.g. common.log_interval=1"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (holding hydra_train.log) or log files")
    parser.add_argument(
        "-o", "--output", type=Path,
        help=f"PNG to write (default: {DEFAULT_NAME} in the run folder; for several runs, in this folder)",
    )
    parser.add_argument("--labels", nargs="+", help="legend name per run (default: the run folder's name)")
    parser.add_argument("--keys", nargs="+", default=[], help="more train_inner keys to plot, e.g. gnorm ema_decay")
    parser.add_argument("--log-y", action="store_true", help="loss panels on a logarithmic axis")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        return fail(UsageError(f"{len(args.labels)} --labels for {len(args.runs)} runs; give one per run"))
    logs = []
    for run in args.runs:
        try:
            log = read_training_log(find_training_log(run))
        except OSError as err:  # FileNotFoundError: no such log or run folder
            return fail(err)
        if not log.train:
            return fail(f"{log.path}: no train_inner lines to plot: {too_short_advice(log)}")
        if len(log.updates) < 2:
            print(f"note: {log.path}: one logged update draws a dot, not a curve: {too_short_advice(log)}")
        logs.append(log)
    output = args.output or (logs[0].path.parent / DEFAULT_NAME if len(logs) == 1 else Path(DEFAULT_NAME))
    titles = plot_training_logs(logs, output, args.labels, args.keys, args.log_y)
    for log in logs:
        updates = log.updates
        print(f"{log.path}: {len(updates)} logged updates ({updates[0]}-{updates[-1]}), keys: {', '.join(log.train)}")
        missing = [k for k in args.keys if k not in log.train]
        if missing:
            print(f"  not in this log: {', '.join(missing)}")
    print(f"wrote {output} ({len(titles)} panels: {', '.join(titles)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
