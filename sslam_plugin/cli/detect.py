"""Detect sound events in audio files with a trained detection model (config/sed).

Each file is read whole and processed in windows of the model's length (overlapping by
--overlap); the windows' frame posteriors are joined before decoding, so an event across a
window edge is reported once. Decoding: median filter of --median-filter seconds, then
--threshold per class (docs/sed.md).

Output: the DCASE TSV (filename onset offset event_label), or JSON {file: [events]}, to stdout
or --output.

Usage: sslam-detect CHECKPOINT AUDIO... [--format tsv|json] [--output FILE]
           [--threshold 0.5 | --threshold dog=0.4 --threshold default=0.5]
           [--median-filter 0.28] [--overlap 0.5] [--device cpu] [--trust-checkpoint]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

from sslam_plugin.cli import UsageError, fail
from sslam_plugin.data.audio import AudioLoadError, load_audio
from sslam_plugin.detection.decoding import events_to_json, write_events_tsv
from sslam_plugin.detection.detector import load_detector


def _thresholds(values: Sequence[str]) -> Union[float, Dict[str, float]]:
    if not values:
        return 0.5
    if len(values) == 1 and "=" not in values[0]:
        return _number(values[0], values[0])
    out = {}
    for value in values:
        label, sep, number = value.rpartition("=")
        if not sep:
            raise UsageError(f"--threshold {value!r}: give one number, or LABEL=NUMBER (and default=NUMBER)")
        out[label] = _number(value, number)
    return out


def _number(value: str, number: str) -> float:
    try:
        return float(number)
    except ValueError:
        raise UsageError(f"--threshold {value!r}: {number!r} is not a number") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="checkpoint of a detection model (config/sed)")
    parser.add_argument("audio", type=Path, nargs="+", help="audio files (any length, rate, channels)")
    parser.add_argument("--format", choices=("tsv", "json"), default="tsv")
    parser.add_argument("--output", type=Path, default=None, help="file to write (default: stdout)")
    parser.add_argument("--threshold", action="append", default=[], metavar="[LABEL=]VALUE",
                        help="decision threshold, one for all classes or per label (repeat; default=VALUE for the rest)")
    parser.add_argument("--median-filter", type=float, default=0.0, help="median filter window, seconds (0: off)")
    parser.add_argument("--overlap", type=float, default=0.5, help="overlap of consecutive windows, in [0, 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow the full unpickler for this file")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.median_filter < 0 or not 0 <= args.overlap < 1:
        return fail(UsageError(f"--median-filter must be at least 0 and --overlap in [0, 1); "
                               f"got {args.median_filter}, {args.overlap}"))
    try:
        thresholds = _thresholds(args.threshold)
    except UsageError as err:
        return fail(err)
    try:
        detector = load_detector(args.checkpoint, device=args.device, trust=args.trust_checkpoint)
        events = {}
        for path in args.audio:
            wave, rate = load_audio(path)
            name = path.name
            events[name] = detector.detect(wave, rate, clip=name, thresholds=thresholds,
                                           median_window=args.median_filter, overlap=args.overlap)
    except (AudioLoadError, OSError, ValueError, RuntimeError) as err:
        return fail(err)
    if args.format == "json":
        text = events_to_json(events) + "\n"
        if args.output:
            args.output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    elif args.output:
        write_events_tsv(args.output, events)
    else:
        sys.stdout.write("filename\tonset\toffset\tevent_label\n")
        for name, file_events in events.items():
            for e in file_events:
                sys.stdout.write(f"{name}\t{e.onset:.3f}\t{e.offset:.3f}\t{e.label}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
