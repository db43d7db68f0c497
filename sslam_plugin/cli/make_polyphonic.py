"""Mix a labelled monophonic collection into a polyphonic benchmark (sslam_plugin.data.polyphony).

Reads a manifest written by sslam-prepare-labels (MANIFEST.tsv, the .lbl beside
it, label_descriptors.csv beside it) and writes scenes of --sources MIN MAX
clips at --level-db LOW HIGH (dB relative to a common reference level), each
source at a random onset, as 16 kHz WAV with their manifests:

    DEST/{train,eval}.tsv, .lbl      clip-level labels, ready for config/linear_eval
    DEST/{train,eval}_events.tsv     scene, source, label, onset_s, offset_s, gain_db
    DEST/sources.tsv                 which side each source clip went to (disjoint)
    DEST/rejected.tsv                unusable source clips, with the reason

Source clips are split first (per label set, by a hash of seed and path;
--test-fraction of each group to the eval side); train scenes use only train
sources. The same --seed writes the same files.

Usage: sslam-make-polyphonic MANIFEST.tsv --dest DIR [--train-scenes 1000] [--eval-scenes 250]
           [--sources 2 4] [--level-db -10 0] [--scene-seconds 10] [--test-fraction 0.25]
           [--seed 0] [--split-names train eval] [--allow-shared-labels] [--force]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from sslam_plugin.cli import UsageError, fail
from sslam_plugin.data.manifest import ManifestError
from sslam_plugin.data.polyphony import SceneConfig, build_polyphonic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="{split}.tsv of the source clips (labels beside it)")
    parser.add_argument("--dest", type=Path, required=True, help="output folder")
    parser.add_argument("--labels", type=Path, default=None, help="clip labels (default: the manifest's .lbl)")
    parser.add_argument("--descriptors", type=Path, default=None, help="default: label_descriptors.csv beside the manifest")
    parser.add_argument("--train-scenes", type=int, default=1000)
    parser.add_argument("--eval-scenes", type=int, default=250)
    parser.add_argument("--split-names", nargs=2, default=["train", "eval"], metavar=("TRAIN", "EVAL"))
    parser.add_argument("--sources", nargs=2, type=int, default=[2, 4], metavar=("MIN", "MAX"), help="sources per scene")
    parser.add_argument("--level-db", nargs=2, type=float, default=[-10.0, 0.0], metavar=("LOW", "HIGH"),
                        help="source gains, dB relative to the common reference level")
    parser.add_argument("--scene-seconds", type=float, default=10.0)
    parser.add_argument("--test-fraction", type=float, default=0.25, help="share of each label set's sources on the eval side")
    parser.add_argument("--allow-shared-labels", action="store_true", help="let two sources of a scene share a label")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs in --dest")
    return parser


def option_problem(args: argparse.Namespace) -> Optional[str]:
    """What is wrong with the option values, if anything (a usage error)."""
    checks = (
        (args.scene_seconds > 0, f"--scene-seconds must be above 0, got {args.scene_seconds}"),
        (1 <= args.sources[0] <= args.sources[1], f"--sources MIN MAX needs 1 <= MIN <= MAX, got {args.sources}"),
        (args.level_db[0] <= args.level_db[1], f"--level-db LOW HIGH needs LOW <= HIGH, got {args.level_db}"),
        (0 < args.test_fraction < 1, f"--test-fraction must be in (0, 1), got {args.test_fraction}"),
        (min(args.train_scenes, args.eval_scenes) >= 0, "--train-scenes and --eval-scenes must be at least 0"),
        (args.split_names[0] != args.split_names[1], f"--split-names needs two names, got {args.split_names}"),
    )
    return next((message for ok, message in checks if not ok), None)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = SceneConfig(
        scene_seconds=args.scene_seconds,
        min_sources=args.sources[0],
        max_sources=args.sources[1],
        min_level_db=args.level_db[0],
        max_level_db=args.level_db[1],
        distinct_labels=not args.allow_shared_labels,
    )
    train, test = args.split_names
    problem = option_problem(args)
    if problem:  # before any file is read
        return fail(UsageError(problem))
    if not args.manifest.is_file():
        return fail(f"{args.manifest}: manifest not found")
    try:
        report = build_polyphonic(
            args.manifest,
            args.dest,
            {train: args.train_scenes, test: args.eval_scenes},
            cfg,
            test_fraction=args.test_fraction,
            seed=args.seed,
            labels=args.labels,
            descriptors=args.descriptors,
            force=args.force,
        )
    except (OSError, ManifestError, ValueError) as err:  # FileExistsError: outputs there without --force
        return fail(err)
    print(report.summary())
    for path, reason in report.rejected:
        print(f"rejected: {path}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
