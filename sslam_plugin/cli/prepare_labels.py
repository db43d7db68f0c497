"""Write labelled manifests for fine-tuning and evaluation datasets.

Each subcommand writes, into --dest (or one sub-folder per ESC-50 fold or
SPASS scene): {split}.tsv (fairseq manifest), {split}.lbl
(clip_id<TAB>label1,label2), label_descriptors.csv (index,label_id,display_name)
and rejected.tsv (listed files that are missing, empty or unreadable; left out).

  audioset  --audio-dir A [--class-labels class_labels_indices.csv (default: the shipped 527 classes)]
            [--balanced balanced_train_segments.csv] [--unbalanced unbalanced_train_segments.csv]
            [--eval eval_segments.csv]
            folders as20k/ (train = balanced) and as2m/ (train = balanced + unbalanced, with
            train_weights.csv), each with eval; missing.tsv lists segments without a downloaded file
  esc50     ROOT [--audio-dir A]       folds fold1..fold5, each with train and eval
  spcv2     ROOT                       Speech Commands v2: train, valid, test
  spass     ROOT [--train-fraction F]  one folder per scene: train (first 75 % of sorted names), eval
  urbansed  ROOT                       train, validate, test
  csv       --split NAME=FILE.csv ... --audio-dir A [--label-sep ,] [--delimiter ,] [--descriptors CSV]

Sound event detection (strong labels; docs/sed.md): each also writes {split}_strong.tsv, the DCASE
strong TSV by clip id, after checking every event (onset within the clip, offset after the onset,
label known), errors naming file:line:

  dcase     --strong SPLIT TSV AUDIO_DIR ... [--weak SPLIT TSV AUDIO_DIR ...]
            [--unlabelled SPLIT TSV AUDIO_DIR ...] [--durations SPLIT TSV ...] [--descriptors CSV]
            DCASE/DESED metadata (filename onset offset event_label / filename event_labels /
            filename; durations: filename duration), several files per split
  urbansed  ROOT --strong              URBAN-SED with its events
  polyphonic FOLDER                    an sslam-make-polyphonic folder: {split}_strong.tsv written
                                       beside each {split}_events.tsv (no --dest)

Existing outputs are never overwritten without --force.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from sslam_plugin.cli import UsageError, fail
from sslam_plugin.data import converters as lm
from sslam_plugin.data.parallel import default_jobs


def _split_arg(text: str) -> tuple:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.csv, got {text!r}")
    return name, Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dest", type=Path, required=True, help="output folder")
    common.add_argument("--jobs", type=int, default=default_jobs(), help="header-reading processes")
    common.add_argument("--force", action="store_true", help="overwrite existing outputs")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_argument("--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="dataset", required=True)

    p = sub.add_parser("audioset", parents=[common], help="AudioSet segment CSVs")
    p.add_argument("--audio-dir", type=Path, required=True, help="downloaded clips, named by YouTube id")
    p.add_argument(
        "--class-labels", type=Path,
        help="class_labels_indices.csv (default: the copy shipped with the plugin, AudioSet's 527 classes)",
    )
    p.add_argument("--balanced", type=Path, help="balanced_train_segments.csv")
    p.add_argument("--unbalanced", type=Path, help="unbalanced_train_segments.csv")
    p.add_argument("--eval", type=Path, help="eval_segments.csv")
    p.add_argument("--id-regex", help="regex finding the YouTube id in a file name (group 'ytid' or group 1)")

    p = sub.add_parser("esc50", parents=[common], help="ESC-50 (meta/esc50.csv)")
    p.add_argument("root", type=Path, help="the ESC-50 folder holding meta/ and audio/")
    p.add_argument("--audio-dir", type=Path, help="audio folder if not ROOT/audio (e.g. a 16 kHz copy)")

    p = sub.add_parser("spcv2", parents=[common], help="Speech Commands v2")
    p.add_argument("root", type=Path, help="folder with the word folders and validation_list.txt, testing_list.txt")

    p = sub.add_parser("spass", parents=[common], help="SPASS (per-scene *_MatrixLabels*.csv)")
    p.add_argument("root", type=Path, help="folder holding the scenes' label CSVs and audio")
    p.add_argument("--train-fraction", type=float, default=0.75, help="share of the sorted names used for train")

    p = sub.add_parser("urbansed", parents=[common], help="URBAN-SED (annotations/*/*.txt)")
    p.add_argument("root", type=Path, help="the URBAN-SED folder holding annotations/ and audio/")
    p.add_argument("--strong", action="store_true", help="also write {split}_strong.tsv (sound event detection)")

    p = sub.add_parser("dcase", parents=[common], help="DCASE/DESED strong, weak and unlabelled TSVs (detection)")
    for kind in ("strong", "weak", "unlabelled"):
        p.add_argument(f"--{kind}", nargs=3, action="append", default=[], metavar=("SPLIT", "TSV", "AUDIO_DIR"),
                       help=f"a {kind} metadata TSV of SPLIT and the folder of its audio; repeatable")
    p.add_argument("--durations", nargs=2, action="append", default=[], metavar=("SPLIT", "TSV"),
                   help="filename<TAB>duration for SPLIT's strong clips (default: read from the audio headers)")
    p.add_argument("--descriptors", type=Path, help="label_descriptors.csv fixing the class order (default: sorted)")

    p = sub.add_parser("polyphonic", help="strong labels of an sslam-make-polyphonic folder (detection)")
    p.add_argument("folder", type=Path, help="sslam-make-polyphonic's --dest ({split}_events.tsv, {split}.tsv)")
    p.add_argument("--force", action="store_true", help="overwrite existing {split}_strong.tsv")
    p.add_argument("--verbose", action="store_true", help="log details")

    p = sub.add_parser("csv", parents=[common], help="generic path,labels CSV files")
    p.add_argument("--split", type=_split_arg, action="append", required=True, help="NAME=FILE.csv, repeatable")
    p.add_argument("--audio-dir", type=Path, required=True, help="folder the CSV paths are relative to")
    p.add_argument("--label-sep", default=",", help="separator between labels in the labels field")
    p.add_argument("--delimiter", default=",", help="column delimiter (use '\\t' for tab)")
    p.add_argument("--descriptors", type=Path, help="fixed label_descriptors.csv (class order) to use")
    return parser


def convert(args: argparse.Namespace) -> Dict[str, lm.LabelledSplits]:
    if args.dataset == "audioset":
        return lm.audioset(
            args.audio_dir,
            args.class_labels,
            balanced=args.balanced,
            unbalanced=args.unbalanced,
            eval_segments=args.eval,
            id_pattern=args.id_regex,
        )
    if args.dataset == "esc50":
        return lm.esc50(args.root, args.audio_dir)
    if args.dataset == "spcv2":
        return {"": lm.speech_commands(args.root)}
    if args.dataset == "spass":
        return lm.spass(args.root, args.train_fraction)
    if args.dataset == "urbansed":
        return {"": lm.urbansed(args.root)}
    delimiter = "\t" if args.delimiter in ("\\t", "tab") else args.delimiter
    label_sep = "\t" if args.label_sep in ("\\t", "tab") else args.label_sep
    return {"": lm.generic_csv(dict(args.split), args.audio_dir, label_sep, delimiter, args.descriptors)}


def dcase_sources(args: argparse.Namespace) -> Dict[str, list]:
    """{split: [DcaseSource]} from the dcase subcommand's --strong / --weak / --unlabelled / --durations."""
    from sslam_plugin.detection.data_folder import DcaseSource

    durations = {}
    for split, tsv in args.durations:
        if split in durations:
            raise UsageError(f"--durations {split}: given twice; one durations TSV per split")
        durations[split] = Path(tsv)
    sources: Dict[str, list] = {}
    for kind in ("strong", "weak", "unlabelled"):
        for split, tsv, audio_dir in getattr(args, kind):
            sources.setdefault(split, []).append(
                DcaseSource(kind, Path(tsv), Path(audio_dir), durations.get(split) if kind == "strong" else None)
            )
    if not any(s.kind == "strong" for srcs in sources.values() for s in srcs):
        raise UsageError("dcase: give at least one --strong SPLIT TSV AUDIO_DIR (strongly labelled clips)")
    unknown = sorted(set(durations) - set(sources))
    if unknown:
        raise UsageError(f"--durations {unknown[0]}: no metadata TSV for that split")
    return sources


def convert_detection(args: argparse.Namespace) -> List[str]:
    """Run a detection subcommand (dcase, urbansed --strong, polyphonic); returns the summary lines."""
    from sslam_plugin.detection import data_folder as df

    if args.dataset == "polyphonic":
        written = df.add_polyphony_strong_labels(args.folder, force=args.force)
        return [_strong_summary(path) for path in written]
    if args.dataset == "dcase":
        descriptors = lm.read_descriptor_rows(args.descriptors) if args.descriptors else None
        dataset = df.dcase_dataset(dcase_sources(args), descriptors)
    else:
        dataset = df.urbansed_dataset(args.root)
    reports = df.write_strong_dataset(
        dataset, args.dest, jobs=max(1, args.jobs), force=args.force, show_progress=not args.no_progress
    )
    lines = [report.summary() for report in reports.values()]
    return lines + [_strong_summary(df.strong_path(args.dest, split)) for split in sorted(dataset.strong)]


def _strong_summary(path: Path) -> str:
    from sslam_plugin.detection.strong_labels import read_dcase_strong

    events = read_dcase_strong(path).events
    return f"{path}: {len(events)} strongly labelled clips, {sum(len(e) for e in events.values())} events"


def option_problem(args: argparse.Namespace) -> Optional[str]:
    """What is wrong with the option values, if anything (a usage error, found before any file is read)."""
    if args.dataset == "audioset" and not (args.balanced or args.unbalanced or args.eval):
        return "audioset: give at least one segment CSV (--balanced, --unbalanced or --eval)"
    if args.dataset == "spass" and not 0 < args.train_fraction < 1:
        return f"--train-fraction must be in (0, 1), got {args.train_fraction}"
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    problem = option_problem(args)
    if problem:
        return fail(UsageError(problem))
    if args.dataset in ("dcase", "polyphonic") or (args.dataset == "urbansed" and args.strong):
        try:
            lines = convert_detection(args)
        except (OSError, ValueError) as err:  # LabelFormatError, StrongLabelError; UsageError: dcase's options
            return fail(err)
        print("\n".join(lines))
        return 0
    try:
        reports = lm.write_label_manifests(
            convert(args), args.dest, jobs=max(1, args.jobs), force=args.force, show_progress=not args.no_progress
        )
    except (OSError, ValueError) as err:  # LabelFormatError; FileExistsError: outputs there without --force
        return fail(err)
    for report in reports.values():
        print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
