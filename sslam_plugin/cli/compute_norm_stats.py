"""Compute a dataset's log-mel normalisation constants (``task.norm_mean``, ``task.norm_std``).

Reads up to --max-clips clips of a manifest (spread evenly over it), computes
their 128-bin Kaldi fbanks (unpadded, before normalisation) and prints the
mean and standard deviation of all values, ready to pass as overrides:

    sslam-norm-stats /data/spass_market/train.tsv
    -> task.norm_mean=-5.1234 task.norm_std=4.5678

Each clip contributes at most --max-frames fbank frames from its start (default
1024, the 10.24 s training looks at: pass the recipe's task.target_length; 0
for whole clips). Only that beginning of a long file is decoded and resampled,
so a 30-minute recording costs what 10 s cost.

Exit status: 0, 1 when the manifest cannot be used or no clip can be read, 2 for
a usage error.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from sslam_plugin.cli import fail
from sslam_plugin.data import AudioLoadError, Manifest, load_audio, read_manifest
from sslam_plugin.data.robust import crop_read_frames, crop_samples
from sslam_plugin.features import FbankConfig, compute_fbank, resample_to
from sslam_plugin.progress import progress

logger = logging.getLogger("compute_norm_stats")

DEFAULT_MAX_FRAMES = 1024  # task.target_length of the recipes: what training looks at


def fbank_statistics(
    manifest: Manifest,
    max_clips: int = 2000,
    num_mel_bins: int = 128,
    show_progress: bool = False,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> Tuple[float, float, int]:
    """(mean, std, clips used) of the unnormalised log-mel values of up to ``max_clips`` clips.

    Each clip gives at most its first ``max_frames`` frames (0: all), and only
    the samples they need are decoded. Unreadable clips are skipped with a
    warning. ``show_progress``: a bar on stderr when it is a terminal
    (:mod:`sslam_plugin.progress`).
    """
    if len(manifest) == 0:
        raise ValueError(f"{manifest.path}: no clips")
    picks = np.unique(np.linspace(0, len(manifest) - 1, min(max_clips, len(manifest))).round().astype(int))
    total, total_sq, count, used = 0.0, 0.0, 0, 0
    cfg = FbankConfig(num_mel_bins=num_mel_bins, target_length=max(1, max_frames))
    keep = crop_samples(cfg) if max_frames > 0 else None  # 16 kHz samples of max_frames frames

    def limit(rate: int, frames: int) -> Optional[int]:
        return None if keep is None else crop_read_frames(keep, rate)

    for index in progress(picks, len(picks), "reading clips", show_progress, unit="clip"):
        try:
            waveform, rate = load_audio(manifest.full_path(int(index)), limit)
            fbank = compute_fbank(resample_to(waveform, rate)[:keep], cfg).double()
        except (AudioLoadError, ValueError) as err:
            logger.warning("skipping %s", err)
            continue
        total += float(fbank.sum())
        total_sq += float((fbank * fbank).sum())
        count += fbank.numel()
        used += 1
    if count == 0:
        raise ValueError(f"{manifest.path}: none of the {len(picks)} clips tried could be read")
    mean = total / count
    return mean, float(np.sqrt(max(total_sq / count - mean * mean, 0.0))), used


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="a fairseq audio manifest (e.g. train.tsv)")
    parser.add_argument("--max-clips", type=int, default=2000, help="clips read, spread evenly over the manifest")
    parser.add_argument(
        "--max-frames", type=int, default=DEFAULT_MAX_FRAMES, metavar="N",
        help=f"fbank frames per clip, from its start (default {DEFAULT_MAX_FRAMES}: what training with "
        "task.target_length=1024 sees; 0: whole clips)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (none either when stderr is not a terminal)")
    args = parser.parse_args(argv)
    if args.max_clips < 1 or args.max_frames < 0:
        parser.error("--max-clips must be >= 1 and --max-frames >= 0")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        mean, std, used = fbank_statistics(
            read_manifest(args.manifest), args.max_clips, show_progress=not args.no_progress, max_frames=args.max_frames
        )
    except (ValueError, OSError) as err:  # ManifestError is a ValueError: a missing or unreadable manifest
        return fail(err)
    logger.info("%d clips of %s", used, args.manifest)
    print(f"task.norm_mean={mean:.4f} task.norm_std={std:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
