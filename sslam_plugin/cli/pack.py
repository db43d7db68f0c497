"""Pack the clips of fairseq manifests into zip shards, for storage where opening millions of files is slow.

For each MANIFEST ({split}.tsv) writes DEST/shards/{split}-00000.zip ... (N clips
each, stored uncompressed: every clip's file bytes as they are, WAV, FLAC or any
other format, named by the clip's relative path) and DEST/{split}.tsv, whose lines
are fairseq's shards/NAME.zip:OFFSET:LENGTH<TAB>num_samples; copies the split's
label files ({split}.lbl, label_descriptors.csv, {split}_weights.csv, ...).
Clips that cannot be read are left out and listed in DEST/rejected_{split}.tsv.

Resumable: run the same command again after a stop; complete shards are kept
(checked from their zip directory), a cut-off one is written again.

Exit status: 0 when every manifest was packed, 1 when one could not be, 2 for a usage error.

Usage: sslam-pack MANIFEST [MANIFEST ...] DEST [--shard-size N]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from sslam_plugin.cli import fail
from sslam_plugin.data.manifest import ManifestError
from sslam_plugin.data.packing import pack_manifest

DEFAULT_SHARD_SIZE = 1000  # ~300 MB of 10 s 16-bit 16 kHz WAV: few files, each still quick to copy


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST", help="{split}.tsv files")
    parser.add_argument("dest", type=Path, metavar="DEST", help="output folder (shards/ and {split}.tsv)")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="N", help="clips per shard")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="log details")
    args = parser.parse_args(argv)
    if args.shard_size < 1:
        parser.error(f"--shard-size must be at least 1, got {args.shard_size}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    status = 0
    for manifest in args.manifests:
        try:
            report = pack_manifest(manifest, args.dest, args.shard_size, show_progress=not args.no_progress)
        except (ManifestError, ValueError, OSError) as err:
            status = fail(err)
            continue
        print(report.summary())
    return status


if __name__ == "__main__":
    sys.exit(main())
