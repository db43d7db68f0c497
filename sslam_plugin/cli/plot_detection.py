"""Draw a clip's log-mel fbank above a piano roll of its predicted and reference events.

Predicted events come from a detection checkpoint (--checkpoint, decoded as sslam-detect does)
or from a TSV of detections (--predicted, DCASE: filename onset offset event_label); reference
events from a strong-label TSV (--reference, same format). Rows of the piano roll are labels;
in each row the reference events are drawn in the upper half, the predicted in the lower half.
With --checkpoint the frame posteriors are drawn too.

Usage: sslam-plot-detection AUDIO --out FIGURE.png (--checkpoint CKPT | --predicted TSV)
           [--reference TSV] [--threshold 0.5] [--median-filter 0.0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from sslam_plugin.cli import UsageError, fail
from sslam_plugin.data.audio import AudioLoadError, load_audio
from sslam_plugin.data.labels import clip_id
from sslam_plugin.detection.strong_labels import Event, StrongLabelError, read_dcase_strong
from sslam_plugin.features import FbankConfig, compute_fbank, resample_to


def clip_events(path: Optional[Path], clip: str) -> List[Event]:
    """The events of ``clip`` in a DCASE strong TSV (none when no file is given)."""
    return read_dcase_strong(path).events.get(clip, []) if path else []


def plot_detection(
    fbank: np.ndarray,
    duration: float,
    reference: Sequence[Event],
    predicted: Sequence[Event],
    labels: Sequence[str],
    out: Path,
    posteriors: Optional[np.ndarray] = None,
    hop: float = 0.04,
    title: str = "",
) -> None:
    """Write the figure: fbank (T, M) on top, [posteriors (F, C)], then the piano roll."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if posteriors is not None else 2
    fig, axes = plt.subplots(panels, 1, figsize=(10, 2.2 + 1.2 * panels + 0.3 * len(labels)), sharex=True)
    axes[0].imshow(fbank.T, origin="lower", aspect="auto", extent=(0, fbank.shape[0] * 0.01, 0, fbank.shape[1]), cmap="magma")
    axes[0].set_ylabel("mel bin")
    axes[0].set_title(title)
    if posteriors is not None:
        times = (np.arange(posteriors.shape[0]) + 0.5) * hop
        for c, label in enumerate(labels):
            axes[1].plot(times, posteriors[:, c], label=label)
        axes[1].set_ylim(0, 1)
        axes[1].set_ylabel("posterior")
        axes[1].legend(loc="upper right", fontsize="small", ncol=min(len(labels), 5))
    roll = axes[-1]
    row = {label: i for i, label in enumerate(labels)}
    for events, offset, colour, name in ((reference, 0.5, "tab:green", "reference"), (predicted, 0.05, "tab:blue", "predicted")):
        for n, e in enumerate(events):
            roll.broken_barh([(e.onset, e.offset - e.onset)], (row[e.label] + offset, 0.45), color=colour,
                             label=name if n == 0 else None)
    roll.set_yticks([i + 0.5 for i in range(len(labels))])
    roll.set_yticklabels(labels)
    roll.set_ylim(0, len(labels))
    roll.set_xlim(0, duration)
    roll.set_xlabel("seconds")
    if reference or predicted:
        roll.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="figure to write (.png)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="detection checkpoint: detect now")
    source.add_argument("--predicted", type=Path, help="detections TSV (filename onset offset event_label)")
    parser.add_argument("--reference", type=Path, help="reference strong-label TSV")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--median-filter", type=float, default=0.0, help="seconds")
    parser.add_argument("--trust-checkpoint", action="store_true")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.median_filter < 0 or not 0 <= args.threshold <= 1:
        return fail(UsageError(f"--median-filter must be at least 0 and --threshold in [0, 1]; "
                               f"got {args.median_filter}, {args.threshold}"))
    clip = clip_id(args.audio.name)
    try:
        wave, rate = load_audio(args.audio)
        fbank = compute_fbank(resample_to(wave, rate), FbankConfig()).numpy()  # (T, M) log-mel
        duration = wave.shape[-1] / rate
        reference = clip_events(args.reference, clip)
        posteriors, hop, labels = None, 0.04, []
        if args.checkpoint:
            from sslam_plugin.detection.detector import load_detector

            detector = load_detector(args.checkpoint, trust=args.trust_checkpoint)
            post = detector.posteriors(wave, rate)
            predicted = detector.decode(post, clip, args.threshold, args.median_filter)
            posteriors, hop, labels = detector.filtered(post, args.median_filter), post.hop, list(detector.labels)
        else:
            predicted = clip_events(args.predicted, clip)
        used = sorted({e.label for e in (*reference, *predicted)} - set(labels))
        labels = labels + used
        plot_detection(fbank, duration, reference, predicted, labels, args.out, posteriors, hop, title=args.audio.name)
    except (AudioLoadError, StrongLabelError, OSError, ValueError) as err:
        return fail(err)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
