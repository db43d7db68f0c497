"""Check fairseq manifests ahead of a long run.

For each clip: present, not empty, a readable header with samples, at least
one 25 ms window long, the header's length equal to the manifest's; with
--decode also fully decoded and free of NaN/Inf. Labelled manifests are
checked against their {split}.lbl, label_descriptors.csv and
{split}_weights.csv when those lie beside them. Sample rates and channel
counts are tallied (training resamples and averages them, so they only
inform). Clips shorter than --min-sample-size samples at 16 kHz (pre-training's
task.min_sample_size, 10000 = 0.625 s in the recipes; compared after
resampling, the same for every rate) are warned about: pre-training leaves
them out. The rates read are kept in {split}.rates for that filter.

Packed clips (zip entries archive.zip:OFFSET:LENGTH, HDF5 entries part.h5/CLIP_ID)
are checked the same way: a missing archive is "missing", a damaged member
(past the archive's end, not audio, an absent dataset) "unreadable"; labels
are matched by the member's name or the CLIP_ID.

Exit status: 0 when no errors were found (warnings allowed), 1 otherwise
(a manifest that cannot be read included), 2 for a usage error.

Usage: sslam-validate-manifest MANIFEST.tsv [...] [--decode] [--jobs N]
           [--max-clips N] [--report problems.tsv]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from sslam_plugin.cli import UsageError, fail
from sslam_plugin.data.manifest import ManifestError
from sslam_plugin.data.parallel import default_jobs
from sslam_plugin.data.validate import validate_manifest

DEFAULT_MIN_SAMPLES = 10000  # task.min_sample_size of the pre-training recipes (config/pretrain/_base.yaml)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifests", nargs="+", type=Path, help="{split}.tsv files")
    parser.add_argument("--decode", action="store_true", help="decode every clip (finds NaN/Inf, corrupt data)")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="checking processes")
    parser.add_argument("--max-clips", type=int, default=None, help="check only this many clips, spread evenly")
    parser.add_argument("--report", type=Path, help="write every problem here: manifest, line, path, severity, reason")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--show", type=int, default=10, help="problems printed per manifest")
    parser.add_argument(
        "--min-sample-size", type=int, default=DEFAULT_MIN_SAMPLES, metavar="N",
        help="warn about clips shorter than N samples at 16 kHz, which pre-training leaves out: your recipe's "
        f"task.min_sample_size (default {DEFAULT_MIN_SAMPLES}, the recipes' value; 0: no check)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if (args.max_clips is not None and args.max_clips < 1) or args.show < 0:
        return fail(UsageError(f"--max-clips must be at least 1 and --show at least 0; got {args.max_clips}, {args.show}"))

    status = 0
    rows = []
    for path in args.manifests:
        try:
            report = validate_manifest(
                path, decode=args.decode, jobs=max(1, args.jobs), max_clips=args.max_clips,
                show_progress=not args.no_progress, min_samples=max(0, args.min_sample_size),
            )
        except (ManifestError, OSError) as err:
            status = fail(err)
            continue
        print(report.summary())
        for problem in report.problems[: args.show]:
            print(f"  {problem.severity}: line {problem.line}: {problem.path}: {problem.reason}")
        if len(report.problems) > args.show:
            print(f"  ... {len(report.problems) - args.show} more" + (f" in {args.report}" if args.report else ""))
        rows += [f"{path}\t{p.line}\t{p.path}\t{p.severity}\t{p.reason}" for p in report.problems]
        if report.errors and status == 0:
            status = 1
    if args.report:
        args.report.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    return status


if __name__ == "__main__":
    sys.exit(main())
