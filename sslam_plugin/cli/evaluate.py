"""Evaluate a fine-tuned checkpoint (or export) on a labelled split.

Prints mAP (multi-label heads) or accuracy (single-label heads) over the whole
split, writes the per-class average precision to a CSV and a bar chart of the
best and worst classes to a PNG.

    sslam-evaluate CHECKPOINT --data MANIFEST_DIR --split eval [--out DIR]

MANIFEST_DIR holds {split}.tsv, {split}.lbl and label_descriptors.csv.

A sound event detection checkpoint (config/sed) is scored on the split's strongly
annotated clips ({split}_strong.tsv): event- and segment-based F1 (sed_eval) and
PSDS1/PSDS2 (sed_scores_eval), with the collar, segment length and PSDS scenario
settings printed beside them; --threshold and --median-filter set the decoding.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Optional, Sequence

from sslam_plugin.cli import UsageError, fail
from sslam_plugin.detection.detector import is_detection_checkpoint
from sslam_plugin.evaluation import evaluate_checkpoint

logger = logging.getLogger("evaluate")


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="folder with {split}.tsv, {split}.lbl, label_descriptors.csv")
    parser.add_argument("--split", default="eval")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None)
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow the full (pickle) loader")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (none either when stderr is not a terminal)")
    parser.add_argument("--threshold", type=float, default=0.5, help="detection: posterior threshold of every class")
    parser.add_argument("--median-filter", type=float, default=0.0, help="detection: median filter window in seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.batch_size < 1 or args.median_filter < 0 or not 0 <= args.threshold <= 1:
        return fail(UsageError("--batch-size must be at least 1, --median-filter at least 0 and --threshold in [0, 1]; "
                               f"got {args.batch_size}, {args.median_filter}, {args.threshold}"))
    try:
        if is_detection_checkpoint(args.checkpoint, trust=args.trust_checkpoint):
            return _evaluate_detection(args)
        summary = evaluate_checkpoint(
            args.checkpoint, args.data, args.split, args.out, args.batch_size, args.device, args.trust_checkpoint,
            show_progress=not args.no_progress,
        )
    except (ValueError, OSError) as err:  # CheckpointError, ManifestError and label errors are ValueErrors
        return fail(err)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['metric']}: {summary['value']:.4f} on {summary['clips']} clips of '{args.split}'")
        print(f"per-class AP: {summary['per_class_csv']}")
        print(f"chart:        {summary['chart']}")


def _evaluate_detection(args: argparse.Namespace) -> Optional[int]:
    from sslam_plugin.detection.evaluate import evaluate_detector, format_report

    result = evaluate_detector(args.checkpoint, args.data, args.split, thresholds=args.threshold,
                               median_window=args.median_filter, trust=args.trust_checkpoint)
    if args.json:
        summary = {k: v for k, v in result.items() if k not in ("detections", "posteriors")}
        print(json.dumps(summary, default=str))
    else:
        print(format_report(result))
    return None


if __name__ == "__main__":
    raise SystemExit(main())
