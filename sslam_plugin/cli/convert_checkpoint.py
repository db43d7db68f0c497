"""Convert between fairseq checkpoints, Hugging Face folders and self-contained encoder exports.

    sslam-convert IN OUT [--to {export,fairseq,official,hf}] [options]

IN (detected from what it holds):
  a fairseq checkpoint   this plugin's, or an official EAT/SSLAM one, pre-trained
                         or fine-tuned with a classification head
  an export folder       config.json ("sslam-encoder-export") + model.safetensors
  a Hugging Face folder  EAT/SSLAM config.json (model_type "eat") + model.safetensors,
                         or a hub repository id such as ta012/SSLAM_pretrain

--to (default: "fairseq" for an export, "export" for anything else):
  export    OUT folder: model.safetensors + config.json (+ labels.json), loadable
            without fairseq by ``sslam_plugin.load_encoder(OUT)``
  fairseq   OUT .pt in this plugin's layout, usable as ``model.model_path``
            (student weights; the same weights as EMA teacher; no head)
  official  OUT .pt the public EAT/SSLAM code loads as its own: ``data2vec_multi`` /
            ``mae_image_pretraining`` (pre-trained; decoder and EMA teacher carried
            over from a pre-training checkpoint), or ``mae_image_classification``
            with the head and labels (fine-tuned)
  hf        OUT folder: config.json + model.safetensors with the names and fields of
            EAT's Hugging Face code (add its modeling files to use trust_remote_code)

Checkpoints are read with torch.load(weights_only=True) unless --trust-checkpoint is given.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch

from sslam_plugin.cli import UsageError, fail
from sslam_plugin.checkpoints import (
    DTYPES,
    CheckpointError,
    EncoderExport,
    download_hub_repo,
    export_from_checkpoint,
    is_export,
    is_hf_folder,
    load_checkpoint_file,
    load_export,
    load_hf_folder,
    looks_like_hub_repo_id,
    pretraining_extras,
    save_export,
    save_fairseq_checkpoint,
    save_hf_folder,
    save_official_checkpoint,
)

logger = logging.getLogger("convert_checkpoint")

TARGETS = ("export", "fairseq", "official", "hf")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "input", help="fairseq checkpoint (.pt), export folder, Hugging Face folder or hub repository id"
    )
    parser.add_argument("output", type=Path, help="the converted checkpoint (.pt) or folder")
    parser.add_argument(
        "--to", choices=TARGETS, default=None,
        help="output layout (default: fairseq for an export input, export otherwise)",
    )
    parser.add_argument("--teacher", action="store_true", help="export the EMA teacher instead of the student")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weight dtype of the output")
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
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag, commit) of a repository id")
    parser.add_argument(
        "--trust-checkpoint", action="store_true",
        help="allow the full unpickler for checkpoints that need it (it can run code stored in the file)",
    )
    parser.add_argument("--overwrite", "--force", action="store_true", help="replace OUT if it exists")
    return parser


def _read(args: argparse.Namespace) -> Tuple[EncoderExport, str, Dict[str, Optional[Dict[str, torch.Tensor]]]]:
    """(the input as an export, its kind, the decoder/teacher a pre-training checkpoint carries)."""
    options = dict(
        labels_csv=args.labels,
        activation=args.activation,
        num_heads=args.num_heads,
        frontend_overrides={
            "target_length": args.target_length,
            "norm_mean": args.norm_mean,
            "norm_std": args.norm_std,
        },
    )
    source = args.input
    if looks_like_hub_repo_id(source):
        source = str(download_hub_repo(source, revision=args.revision))
    if is_hf_folder(source):  # before is_export: both are folders with a config.json
        if args.teacher:
            raise CheckpointError(f"{args.input}: a Hugging Face folder holds one set of weights; --teacher applies to checkpoints")
        return load_hf_folder(source, **options), "hf", {}
    if is_export(source):
        if args.teacher:
            raise CheckpointError(f"{args.input}: an export holds one set of weights; --teacher applies to checkpoints")
        return load_export(source), "export", {}
    ckpt = load_checkpoint_file(source, trust=args.trust_checkpoint)
    export = export_from_checkpoint(ckpt, source=str(source), teacher=args.teacher, **options)
    extras: Dict[str, Optional[Dict[str, torch.Tensor]]] = {}
    if export.head is None and not args.teacher:
        # the official layout can carry the pre-training decoder and EMA teacher unchanged
        decoder, teacher = pretraining_extras(ckpt, str(source))
        extras = {"decoder": decoder, "teacher": teacher}
    return export, "checkpoint", extras


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    bad = [f"{name} {value}" for name, value in (("--num-heads", args.num_heads), ("--target-length", args.target_length),
                                                 ("--norm-std", args.norm_std)) if value is not None and value <= 0]
    if bad:
        return fail(UsageError(f"{', '.join(bad)}: must be above 0"))
    if args.output.exists() and not args.overwrite:
        return fail(f"{args.output} exists; pass --overwrite to replace it")
    try:
        export, kind, extras = _read(args)
        target = args.to or ("fairseq" if kind == "export" else "export")
        if target == "export":
            save_export(export, args.output, dtype=args.dtype)
        elif target == "hf":
            save_hf_folder(export, args.output, dtype=args.dtype)
        else:
            export = export.to(DTYPES[args.dtype])
            if target == "fairseq":
                save_fairseq_checkpoint(export, args.output)
            else:
                extras = {k: None if v is None else {n: t.to(DTYPES[args.dtype]) for n, t in v.items()} for k, v in extras.items()}
                save_official_checkpoint(export, args.output, **extras)
    except (CheckpointError, OSError) as err:
        return fail(err)
    enc = export.encoder
    head = f", head with {export.head.num_classes} classes" if export.head else ""
    print(
        f"wrote {target} {args.output}: from {export.source.get('format')} ({export.weights}), depth {enc.depth}, "
        f"width {enc.embed_dim}, {enc.num_heads} heads{head}, {args.dtype}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
