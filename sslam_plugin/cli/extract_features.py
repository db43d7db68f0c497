"""Extract encoder features for many clips, resumably.

    sslam-extract CHECKPOINT INPUT OUTPUT_DIR [options]

CHECKPOINT  an export folder or a fairseq checkpoint (see convert_checkpoint.py)
INPUT       an audio file, a folder (searched recursively), or a fairseq manifest (.tsv)
OUTPUT_DIR  one ``<clip>.npy`` per clip, mirroring the input's relative paths
            (granularity "time" adds ``<clip>.timestamps.npy``, row centres in seconds);
            or, with --shard-size N, ``shard_00000.npz``... holding N clips each,
            keyed by the clip's relative path (``<path>#timestamps`` for timestamps).

Arrays (float32): patch (L, D) patch tokens; time (R, D) one vector per 16-frame
row (160 ms); utterance (D,); all (1 + L, D), CLS first. Rows holding only
padding are dropped unless --keep-padding. Clips longer than the checkpoint's
target_length are cropped, or with --long-clips windows cut into consecutive
windows whose features are concatenated (utterance: averaged); the log says
which, once. Only what is used is decoded: a cropped long clip is read as far as
its first window (and a resampling margin), a windowed one in blocks, so memory
does not grow with its length beyond its features. A clip that cannot be used (undecodable, empty, NaN or Inf samples,
shorter than 25 ms) is logged by name and counted as failed; the others are
extracted, and the exit status is 1.

Rerunning skips every clip (or shard) whose output exists; outputs are written
to a temporary name and renamed, so an interrupted clip is recomputed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sslam_plugin.data import AudioLoadError, ManifestError, read_manifest
from sslam_plugin.data.labels import path_clip_id
from sslam_plugin.data.packed_audio import parse_entry
from sslam_plugin.data.robust import failure_reason
from sslam_plugin.data.row_tables import StringTable
from sslam_plugin.data.scan import AUDIO_EXTENSIONS
from sslam_plugin.checkpoints import DTYPES, CheckpointError
from sslam_plugin.cli import UsageError, fail
from sslam_plugin.features import FbankConfig
from sslam_plugin.clips import read_clip_windows
from sslam_plugin.inference import ClipFeatures, ClipWindows, load_encoder
from sslam_plugin.progress import progress_bar
from sslam_plugin.vocabulary import GRANULARITIES, parse_granularity, parse_pooling

logger = logging.getLogger("extract_features")

SETTINGS_FILE = "extraction.json"
# settings that change what the outputs hold: a resumed run must use the same
SETTINGS_THAT_MATTER = ("granularity", "utterance_pooling", "long_clips", "trim_padding", "shard_size")


@dataclass
class Clip:
    path: Path  # the audio file
    name: str  # relative posix path, names its output
    # a packed entry (archive.zip:offset:length, part.h5/id) names its output by its clip id instead:
    # every clip of a shard shares the archive's path
    stem: Optional[str] = None


@dataclass
class Unit:
    """One output file and the clips it holds."""

    output: Path
    clips: List[int]


# ------------------------------------------------------------------ inputs
def list_clips(source: Path, extensions: Sequence[str]) -> List[Clip]:
    """The clips of an audio file, a folder or a manifest, in a stable order."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
        return [Clip(p, p.relative_to(source).as_posix()) for p in files]
    if source.is_file() and source.suffix.lower() in extensions:
        return [Clip(source, source.name)]
    if source.is_file():
        manifest = read_manifest(source)
        return [
            Clip(manifest.full_path(i), PurePosixPath(f).as_posix(),
                 path_clip_id(f, manifest.root) if parse_entry(f, look=False) is not None else None)
            for i, f in enumerate(manifest.files)
        ]
    raise FileNotFoundError(f"{source}: no such file or folder")


def output_name(name: str, stem: Optional[str] = None) -> PurePosixPath:
    """``name`` with ``.npy`` for its extension, or ``stem`` + ``.npy`` when given (a packed entry's clip id)."""
    rel = PurePosixPath(stem if stem is not None else name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"clip path {name!r} would be written outside OUTPUT_DIR; use paths relative to the root")
    return rel.with_name(rel.name + ".npy") if stem is not None else rel.with_suffix(".npy")


def plan_units(clips: Sequence[Clip], out_dir: Path, shard_size: int) -> List[Unit]:
    if shard_size > 0:
        return [
            Unit(out_dir / f"shard_{k:05d}.npz", list(range(start, min(start + shard_size, len(clips)))))
            for k, start in enumerate(range(0, len(clips), shard_size))
        ]
    units, seen = [], {}
    for i, clip in enumerate(clips):
        rel = output_name(clip.name, clip.stem)
        if rel in seen:
            raise ValueError(f"{clip.name} and {clips[seen[rel]].name} would both be written to {rel}; rename one")
        seen[rel] = i
        units.append(Unit(out_dir / rel, [i]))
    return units


class ClipDataset(Dataset):
    """Decodes clips and computes their fbank windows (in DataLoader workers)."""

    def __init__(self, clips: Sequence[Tuple[int, Clip]], frontend: FbankConfig, long_clips: str):
        # packed, not a Clip object per row: the workers share these instead of copying them
        self.indices = np.fromiter((i for i, _ in clips), dtype=np.int64, count=len(clips))
        self.paths = StringTable.from_strings(str(clip.path) for _, clip in clips)
        self.frontend = frontend
        self.long_clips = long_clips

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> Tuple[int, Union[ClipWindows, str]]:
        index, path = int(self.indices[item]), Path(self.paths[item])
        try:
            # only what the windows use is decoded: a crop reads a long file's start, windows stream it
            return index, read_clip_windows(path, self.frontend, self.long_clips)
        except (AudioLoadError, ValueError, RuntimeError) as err:  # NaN / Inf samples: AudioLoadError
            return index, f"{path}: {failure_reason(err, str(path))}"


# ----------------------------------------------------------------- outputs
def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write atomically: an interrupted write never leaves a file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(path)
    with tmp.open("wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


def save_npz(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(path)
    with tmp.open("wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)


def clip_arrays(name: str, feats: ClipFeatures) -> Dict[str, np.ndarray]:
    arrays = {name: feats.features.float().cpu().numpy()}
    if feats.timestamps is not None:
        arrays[name + "#timestamps"] = feats.timestamps.numpy()
    return arrays


def write_unit(unit: Unit, clips: Sequence[Clip], results: Dict[int, ClipFeatures], sharded: bool) -> None:
    if sharded:
        arrays: Dict[str, np.ndarray] = {}
        for i in unit.clips:
            if i in results:
                arrays.update(clip_arrays(clips[i].name, results[i]))
        save_npz(unit.output, arrays)
        return
    feats = results.get(unit.clips[0])
    if feats is None:
        return  # failed clip: nothing written, retried on the next run
    if feats.timestamps is not None:  # timestamps first: the features file marks the clip as done
        save_npy(unit.output.with_suffix(".timestamps.npy"), feats.timestamps.numpy())
    save_npy(unit.output, feats.features.float().cpu().numpy())


def check_settings(out_dir: Path, settings: Dict[str, object], overwrite: bool) -> None:
    path = out_dir / SETTINGS_FILE
    if path.is_file() and not overwrite:
        old = json.loads(path.read_text())
        changed = {k: (old.get(k), settings[k]) for k in SETTINGS_THAT_MATTER if old.get(k) != settings[k]}
        if changed:
            raise ValueError(
                f"{out_dir} holds features extracted with other settings "
                f"({', '.join(f'{k}: {a!r} then, {b!r} now' for k, (a, b) in changed.items())}); "
                "use another OUTPUT_DIR, or --overwrite to recompute everything"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


# -------------------------------------------------------------------- main
def _word(parse: Callable[[str, str], str], option: str) -> Callable[[str], str]:
    """An argparse ``type`` for one of the vocabulary's words (old names mapped, others refused alike)."""

    def convert(text: str) -> str:
        try:
            return parse(text, option)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="export folder or fairseq checkpoint")
    parser.add_argument("input", type=Path, help="audio file, folder, or manifest (.tsv)")
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--granularity", type=_word(parse_granularity, "--granularity"), default="patch",
                        help=f"{', '.join(GRANULARITIES)} ('frame' is the old name of 'patch')")
    parser.add_argument(
        "--utterance-pooling", type=_word(parse_pooling, "--utterance-pooling"), default="cls",
        help="utterance vector: cls (the CLS token) or mean (of the patch tokens)",
    )
    parser.add_argument("--long-clips", choices=("crop", "windows"), default="crop",
                        help="clips longer than target_length: crop, or encode consecutive windows")
    parser.add_argument("--keep-padding", action="store_true", help="keep the rows that only hold padding")
    parser.add_argument("--shard-size", type=int, default=0, help="clips per .npz shard (0: one .npy per clip)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips loaded, and windows encoded, together")
    parser.add_argument("--num-workers", type=int, default=2, help="processes decoding audio")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="compute dtype")
    parser.add_argument("--teacher", action="store_true", help="use the EMA teacher of a pre-training checkpoint")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow the full unpickler for checkpoints that need it (it can run code in the file)")
    parser.add_argument("--extensions", default=",".join(AUDIO_EXTENSIONS),
                        help="audio file extensions searched in a folder")
    parser.add_argument("--overwrite", "--force", action="store_true", help="recompute clips whose outputs exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (none either when stderr is not a terminal)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.granularity == "all" and args.long_clips == "windows":
        return fail(UsageError("--granularity all (CLS + patches) is per window; with --long-clips windows use "
                               "patch, time or utterance"))
    if args.shard_size < 0 or args.batch_size < 1 or args.num_workers < 0:
        return fail(UsageError(f"--shard-size and --num-workers must be at least 0 and --batch-size at least 1; "
                               f"got {args.shard_size}, {args.num_workers}, {args.batch_size}"))
    extensions = tuple(e if e.startswith(".") else "." + e for e in args.extensions.lower().split(","))
    try:
        clips = list_clips(args.input, extensions)
        units = plan_units(clips, args.output_dir, args.shard_size)
        settings = {
            "checkpoint": str(args.checkpoint.resolve()),
            "teacher": args.teacher,
            "granularity": args.granularity,
            "utterance_pooling": args.utterance_pooling,
            "long_clips": args.long_clips,
            "trim_padding": not args.keep_padding,
            "shard_size": args.shard_size,
        }
        check_settings(args.output_dir, settings, args.overwrite)
        model = load_encoder(
            args.checkpoint, device=args.device, dtype=args.dtype, teacher=args.teacher, trust=args.trust_checkpoint
        )
    except (CheckpointError, ManifestError, OSError, ValueError) as err:
        return fail(err)
    pending = [u for u in units if args.overwrite or not u.output.exists()]
    todo = [i for u in pending for i in u.clips]
    skipped = len(clips) - len(todo)
    if skipped:
        logger.info("skipping %d clips whose outputs exist in %s", skipped, args.output_dir)
    failed = run(model, clips, pending, todo, args)
    done = len(todo) - failed
    print(f"extracted {done} clips ({args.granularity}) into {args.output_dir}; {skipped} already done, {failed} failed")
    return 1 if failed else 0


def run(model, clips: List[Clip], pending: List[Unit], todo: List[int], args: argparse.Namespace) -> int:
    """Extract ``todo`` clips and write each pending unit as soon as its clips are done."""
    if not todo:
        return 0
    owner = {i: u for u, unit in enumerate(pending) for i in unit.clips}
    remaining = {u: len(unit.clips) for u, unit in enumerate(pending)}
    results: Dict[int, ClipFeatures] = {}
    failed = 0
    loader = DataLoader(
        ClipDataset([(i, clips[i]) for i in todo], model.frontend, args.long_clips),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        collate_fn=list,
    )
    # a bar on stderr when it is a terminal (sslam_plugin.progress); stdout keeps the one-line summary
    progress = progress_bar(len(todo), "extracting", "clip", enabled=not args.no_progress)
    try:
        for batch in loader:
            ready = [(i, w) for i, w in batch if isinstance(w, ClipWindows)]
            for i, message in batch:
                if isinstance(message, str):
                    logger.error("skipped %s", message)
                    failed += 1
            feats = model.encode_windows(
                [w for _, w in ready], args.granularity, args.utterance_pooling, not args.keep_padding, args.batch_size
            )
            results.update({i: f for (i, _), f in zip(ready, feats)})
            for i, _ in batch:
                u = owner[i]
                remaining[u] -= 1
                if remaining[u] == 0:
                    write_unit(pending[u], clips, results, args.shard_size > 0)
                    for j in pending[u].clips:
                        results.pop(j, None)
            progress.update(len(batch))
    finally:
        progress.close()
    return failed


if __name__ == "__main__":
    sys.exit(main())
