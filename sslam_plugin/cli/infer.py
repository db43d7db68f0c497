"""Top-k labels of audio clips with a fine-tuned checkpoint.

    sslam-infer CHECKPOINT AUDIO... [--top-k 5] [--json]

CHECKPOINT is a fine-tuned fairseq checkpoint (official EAT/SSLAM or this
plugin's) or an export of one. Scores are sigmoid probabilities for multi-label
heads (AudioSet) and softmax probabilities for single-label ones, as the
checkpoint says (--activation overrides). Each clip is cropped or padded to the
checkpoint's target_length, as in fine-tuning (a longer clip is logged once);
of a long file only that beginning is decoded.
A file that cannot be used (undecodable, empty, NaN or Inf samples, shorter than
25 ms) is reported by name on stderr, the other files are still scored, and the
exit status is 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from sslam_plugin.cli import UsageError, fail
from sslam_plugin.clips import read_clip_windows
from sslam_plugin.data import AudioLoadError
from sslam_plugin.data.robust import failure_reason
from sslam_plugin.checkpoints import CheckpointError, read_label_csv
from sslam_plugin.inference import load_encoder

logger = logging.getLogger("infer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="fine-tuned fairseq checkpoint or export folder")
    parser.add_argument("audio", type=Path, nargs="+", help="audio files")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--labels", type=Path, default=None,
                        help="index,label_id,display_name CSV, for checkpoints that store no label names")
    parser.add_argument("--activation", choices=("sigmoid", "softmax"), default=None,
                        help="score activation (default: from the checkpoint)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow the full unpickler for checkpoints that need it (it can run code in the file)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.top_k < 1:
        return fail(UsageError(f"--top-k must be at least 1, got {args.top_k}"))
    try:
        model = load_encoder(args.checkpoint, device=args.device, trust=args.trust_checkpoint)
        if model.head_config is None:
            raise CheckpointError(
                f"{args.checkpoint} has no classification head; infer.py needs a fine-tuned checkpoint "
                "(use extract_features.py for pre-trained ones)"
            )
        if args.labels is not None:
            labels = read_label_csv(args.labels)
            if len(labels) != model.head_config.num_classes:
                raise CheckpointError(
                    f"{args.labels} lists {len(labels)} labels but the head has {model.head_config.num_classes} classes"
                )
            model.labels = labels
    except (CheckpointError, OSError) as err:
        return fail(err)
    if args.activation is not None:
        model.head_config = dataclasses.replace(model.head_config, activation=args.activation)
    report, failed = [], 0
    for path in args.audio:
        try:
            window = read_clip_windows(path, model.frontend, "crop")  # decodes a long file's start only
            model._note_long_clips([window], "crop")
            predictions = model.predict(window.fbank, top_k=args.top_k)[0]
        except (AudioLoadError, ValueError) as err:  # WaveformError is a ValueError
            fail(f"{path}: {failure_reason(err, str(path))}")
            failed += 1
            continue
        report.append({"file": str(path), "predictions": [p._asdict() for p in predictions]})
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for item in report:
            print(item["file"])
            for rank, p in enumerate(item["predictions"], start=1):
                print(f"  {rank:2d}. {p['score']:.4f}  {p['name']} ({p['label_id']})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
