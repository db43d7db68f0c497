"""Convert between fairseq checkpoints and self-contained encoder exports.

    sslam-convert IN OUT [options]

IN a fairseq checkpoint (this plugin's, or an official EAT/SSLAM one,
   pre-trained or fine-tuned with a classification head)
   -> OUT an export folder: model.safetensors + config.json (+ labels.json),
      loadable without fairseq by ``sslam_plugin.load_encoder(OUT)``.

IN an export folder
   -> OUT a fairseq checkpoint (.pt) that fine-tuning accepts as
      ``model.model_path`` (student weights; the same weights as EMA teacher).

The source format is detected from the checkpoint itself; checkpoints are read
with torch.load(weights_only=True) unless --trust-checkpoint is given.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from sslam_plugin.checkpoints import (
    DTYPES,
    CheckpointError,
    is_export,
    load_checkpoint_as_export,
    load_export,
    save_export,
    save_fairseq_checkpoint,
)

logger = logging.getLogger("convert_checkpoint")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="fairseq checkpoint (.pt) or export folder")
    parser.add_argument("output", type=Path, help="export folder, or fairseq checkpoint when IN is an export")
    parser.add_argument("--teacher", action="store_true", help="export the EMA teacher instead of the student")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weight dtype of the export")
    parser.add_argument(
        "--labels", type=Path, default=None,
        help="index,label_id,display_name CSV for a head whose checkpoint stores no label names",
    )
    parser.add_argument(
        "--activation", choices=("sigmoid", "softmax"), default=None,
        help="score activation of the head (default: from the checkpoint; multi-label heads use sigmoid)",
    )
    parser.add_argument("--num-heads", type=int, default=None, help="attention heads, when the config does not say")
    parser.add_argument("--target-length", type=int, default=None, help="override the front end's frames per clip")
    parser.add_argument("--norm-mean", type=float, default=None, help="override the log-mel normalisation mean")
    parser.add_argument("--norm-std", type=float, default=None, help="override the log-mel normalisation std")
    parser.add_argument(
        "--trust-checkpoint", action="store_true",
        help="allow the full unpickler for checkpoints that need it (it can run code stored in the file)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.output.exists() and not args.overwrite:
        print(f"error: {args.output} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        if is_export(args.input):
            if args.teacher:
                raise CheckpointError(f"{args.input}: an export holds one set of weights; --teacher applies to checkpoints")
            export = load_export(args.input).to(DTYPES[args.dtype])
            save_fairseq_checkpoint(export, args.output)
            print(f"wrote fairseq checkpoint {args.output} ({export.weights} weights of {args.input})")
            return 0
        export = load_checkpoint_as_export(
            args.input,
            trust=args.trust_checkpoint,
            teacher=args.teacher,
            num_heads=args.num_heads,
            labels_csv=args.labels,
            activation=args.activation,
            frontend_overrides={
                "target_length": args.target_length,
                "norm_mean": args.norm_mean,
                "norm_std": args.norm_std,
            },
        )
        save_export(export, args.output, dtype=args.dtype)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    enc = export.encoder
    head = f", head with {export.head.num_classes} classes" if export.head else ""
    print(
        f"wrote export {args.output}: {export.source.get('format')} ({export.weights}), depth {enc.depth}, "
        f"width {enc.embed_dim}, {enc.num_heads} heads{head}, {args.dtype}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
