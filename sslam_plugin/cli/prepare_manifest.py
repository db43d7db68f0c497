"""Write fairseq audio manifests for a folder of clips, reading headers only.

Same interface and output as fairseq's examples/wav2vec/wav2vec_manifest.py:

    DEST/train.tsv, DEST/valid.tsv   first line the audio root, then relative/path<TAB>num_samples

plus DEST/rejected.tsv (same layout, second column the reason) listing files
that are missing, empty, unreadable, hold no samples or fall outside
--min-seconds/--max-seconds; they are left out of the manifests.

Headers are read by --jobs processes, a chunk of files at a time; on a
terminal, progress bars on stderr count the files found, then the headers
read (--no-progress: none). About 45,000 files/s on 2 cores from a warm page
cache after a few seconds of start-up (docs/benchmarks.md); a cluster file
system sets its own pace.

--valid-percent is a fraction, as in wav2vec_manifest.py (0.01 = 1 %). A
clip's split depends only on (--seed, its relative path): the same on every
run and for any --jobs, and unchanged when files are added later.

Exit status: 0, 1 when the audio folder is missing or the manifests exist
(without --force), 2 for a usage error.

Usage: sslam-prepare-manifest AUDIO_DIR --dest DIR [--ext wav,flac,ogg,mp3]
           [--valid-percent 0.01] [--seed 42] [--jobs N] [--min-seconds S] [--max-seconds S] [--force]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from sslam_plugin.data.parallel import default_jobs
from sslam_plugin.data.scan import AUDIO_EXTENSIONS, prepare_manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", metavar="AUDIO_DIR", type=Path, help="folder searched recursively for audio")
    parser.add_argument("--dest", type=Path, required=True, help="output folder for the manifests")
    parser.add_argument("--ext", default=",".join(AUDIO_EXTENSIONS), help="comma-separated extensions (any case)")
    parser.add_argument("--valid-percent", type=float, default=0.01, help="fraction of clips for valid.tsv (0.01 = 1 %%)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/valid split")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="header-reading processes (default: all CPUs)")
    parser.add_argument("--min-seconds", type=float, default=None, help="reject clips shorter than this")
    parser.add_argument("--max-seconds", type=float, default=None, help="reject clips longer than this")
    parser.add_argument("--path-must-contain", default=None, help="keep only paths containing this text")
    parser.add_argument("--force", action="store_true", help="overwrite existing manifests in --dest")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="log progress details")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not 0.0 <= args.valid_percent <= 1.0:
        print(
            f"error: --valid-percent is a fraction as in wav2vec_manifest.py (0.01 = 1 %), got {args.valid_percent}",
            file=sys.stderr,
        )
        return 2
    extensions = [e.strip().lstrip(".") for e in args.ext.split(",") if e.strip()]
    try:
        report = prepare_manifest(
            args.root,
            args.dest,
            extensions=extensions,
            valid_fraction=args.valid_percent,
            seed=args.seed,
            jobs=max(1, args.jobs),
            min_seconds=args.min_seconds,
            max_seconds=args.max_seconds,
            path_must_contain=args.path_must_contain,
            force=args.force,
            show_progress=not args.no_progress,
        )
    except ValueError as err:  # arguments that do not fit together
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (FileExistsError, FileNotFoundError) as err:  # the folders: a missing audio folder, manifests already there
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
