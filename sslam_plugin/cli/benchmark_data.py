"""Benchmark the training data path: clips per second per DataLoader-like worker.

Per clip, the work of one pre-training item: decode (soundfile, channels
averaged), resample to 16 kHz, Kaldi fbank + pad/crop + normalise, and
``clone_batch`` inverse block masks. Each worker is a process with one torch
thread (as in a DataLoader worker); stage times are per clip, averaged.

The public EAT data path does the same per-clip work (soundfile read,
torchaudio's resample and Kaldi fbank with the same arguments at 16 kHz,
pad/crop, normalise); its inverse block masks are drawn in the model, with
torch, ``clone_batch`` per clip. ``--compare-public`` (the default) times a
re-implementation of that path (:func:`public_item`, written from its
documented behaviour, no fairseq needed) in the same worker on the same files,
clip by clip in turn with this package's path, so the ratio of the two
clips/s comes from one run under the same load.

Without --manifest, CLIPS synthetic clips are written to a temporary folder
(--sample-rate 44100 --channels 2 includes resampling and down-mixing).

--long-file MINUTES instead times one clip of a MINUTES-long file (--sample-rate,
--channels, --format), read as training reads it now (only the beginning the
features use is decoded and resampled) and as it was read before (the whole
file, then cropped): seconds and peak memory, each in a fresh process.

Usage: sslam-benchmark data [--manifest train.tsv] [--clips 64] [--workers 1 2]
           [--seconds 10] [--sample-rate 16000] [--channels 1] [--format wav]
           [--target-length 1024] [--clone-batch 16]
       sslam-benchmark data --long-file 30 [--sample-rate 44100] [--channels 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

import soundfile as sf
import torch
import torchaudio

from sslam_plugin.data.audio import load_audio
from sslam_plugin.cli import fail
from sslam_plugin.data.manifest import ManifestError, read_manifest
from sslam_plugin.data.workers import keep_freed_memory_for_reuse
from sslam_plugin.features import FbankConfig, compute_fbank, normalize_fbank, pad_or_crop, resample_to
from sslam_plugin.masking import inverse_block_mask, mask_rng

STAGES = ("decode", "resample", "fbank", "mask")


def make_clips(folder: Path, count: int, seconds: float, rate: int, channels: int, fmt: str) -> List[str]:
    rng = np.random.default_rng(0)
    paths = []
    n = int(seconds * rate)
    t = np.arange(n) / rate
    for i in range(count):
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t)
        clip = (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)
        data = np.stack([clip] * channels, axis=1) if channels > 1 else clip
        path = folder / f"clip_{i:05d}.{fmt}"
        sf.write(str(path), data, rate, subtype="PCM_16")
        paths.append(str(path))
    return paths


def public_block_masks(
    grid: tuple, copies: int, generator: torch.Generator, mask_ratio: float = 0.8,
    adjust: float = 0.07, block: int = 5,
) -> torch.Tensor:
    """The public code's inverse block masks (torch, per step in the model), re-implemented for timing.

    Block centres are drawn with replacement, the block around each centre is
    marked (indices clamped at the grid's edges), then each copy's count is
    corrected to exactly ``int(L * (1 - mask_ratio))`` kept patches by
    multinomial draws, one copy at a time.

    Returns:
        (copies, rows * cols) bool, True = masked.
    """
    rows, cols = grid
    length = rows * cols
    keep_ratio = 1.0 - mask_ratio
    keep = torch.zeros(copies, rows, cols)
    centres = torch.randint(0, length, (copies, int(length * (keep_ratio + adjust) / block**2)), generator=generator)
    keep.view(copies, -1).scatter_(1, centres, 1.0)
    copy_idx, r, c = keep.nonzero(as_tuple=True)
    offsets = torch.arange(block) - block // 2
    rr = (r[:, None, None] + offsets[None, :, None]).clamp(0, rows - 1).expand(-1, block, block)
    cc = (c[:, None, None] + offsets[None, None, :]).clamp(0, cols - 1).expand(-1, block, block)
    keep[copy_idx[:, None, None].expand(-1, block, block), rr, cc] = 1.0
    keep = keep.view(copies, -1)
    target = int(length * keep_ratio)
    for row in keep:  # the public code corrects each copy in a Python loop
        n = int(row.sum())
        if n > target:
            row[torch.multinomial(row, n - target, replacement=False, generator=generator)] = 0.0
        elif n < target:
            row[torch.multinomial(1.0 - row, target - n, replacement=False, generator=generator)] = 1.0
    return keep == 0


def public_item(path: str, cfg: FbankConfig, grid: tuple, copies: int, generator: torch.Generator) -> Dict[str, float]:
    """One item of the public EAT data path, timed per stage (seconds): decode, resample, fbank, mask."""
    t0 = time.perf_counter()
    wav, rate = sf.read(path, dtype="float32")
    feats = torch.from_numpy(wav).float()
    if feats.dim() == 2:  # (time, channels) -> (time,)
        feats = feats.mean(-1)
    t1 = time.perf_counter()
    if rate != 16000:
        feats = torchaudio.functional.resample(feats, orig_freq=rate, new_freq=16000)
    t2 = time.perf_counter()
    feats = feats - feats.mean()
    fbank = torchaudio.compliance.kaldi.fbank(
        feats.unsqueeze(0), htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type="hanning", num_mel_bins=cfg.num_mel_bins, dither=0.0, frame_shift=10,
    ).unsqueeze(0)  # (1, frames, mels)
    diff = cfg.target_length - fbank.shape[1]
    if diff > 0:
        fbank = torch.nn.ZeroPad2d((0, 0, 0, diff))(fbank)
    elif diff < 0:
        fbank = fbank[:, : cfg.target_length, :]
    fbank = (fbank - cfg.norm_mean) / (cfg.norm_std * 2)
    t3 = time.perf_counter()
    public_block_masks(grid, copies, generator)
    t4 = time.perf_counter()
    assert fbank.shape == (1, cfg.target_length, cfg.num_mel_bins)
    return dict(zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)))


def bench_worker(job: Dict) -> Dict[str, float]:
    """Process ``job['paths']`` once (after one warm-up clip); returns seconds per stage and the clip count."""
    torch.set_num_threads(1)
    if job["worker_setup"]:
        keep_freed_memory_for_reuse()  # what the training dataset's worker_init_fn does
    cfg: FbankConfig = job["fbank"]
    grid = (cfg.target_length // job["patch_size"], cfg.num_mel_bins // job["patch_size"])
    totals = dict.fromkeys(STAGES, 0.0)

    public = dict.fromkeys(STAGES, 0.0)
    generator = torch.Generator().manual_seed(0)

    def one(path: str, index: int, timed: bool) -> None:
        t0 = time.perf_counter()
        wav, rate = load_audio(path)  # (time,) at the file's rate
        t1 = time.perf_counter()
        wav = resample_to(wav, rate)
        t2 = time.perf_counter()
        feats = normalize_fbank(pad_or_crop(compute_fbank(wav, cfg), cfg.target_length), cfg.norm_mean, cfg.norm_std)
        t3 = time.perf_counter()
        inverse_block_mask(grid, job["clone_batch"], rng=mask_rng(0, 1, index))
        t4 = time.perf_counter()
        assert feats.shape == (cfg.target_length, cfg.num_mel_bins)
        if timed:
            for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                totals[stage] += dt

    def one_public(path: str, timed: bool) -> None:
        times = public_item(path, cfg, grid, job["clone_batch"], generator)
        if timed:
            for stage, dt in times.items():
                public[stage] += dt

    one(job["paths"][0], 0, timed=False)
    if job["compare_public"]:
        one_public(job["paths"][0], timed=False)
    for i, path in enumerate(job["paths"]):
        # the two paths take turns clip by clip, in alternating order, under the same load
        order = (True, False) if i % 2 == 0 else (False, True)
        for ours in order:
            if ours:
                one(path, i, timed=True)
            elif job["compare_public"]:
                one_public(path, timed=True)
    totals["wall"] = sum(totals[s] for s in STAGES)
    totals["clips"] = float(len(job["paths"]))
    totals.update({f"public_{s}": public[s] for s in STAGES})
    totals["public_wall"] = sum(public.values())
    return totals


def run(
    paths: Sequence[str], workers: int, fbank: FbankConfig, patch_size: int, clone_batch: int,
    compare_public: bool = True, worker_setup: bool = True,
) -> Dict[str, float]:
    jobs = [
        {
            "paths": list(paths[w:]) + list(paths[:w]), "fbank": fbank, "patch_size": patch_size,
            "clone_batch": clone_batch, "compare_public": compare_public, "worker_setup": worker_setup,
        }
        for w in range(workers)
    ]
    if workers == 1:
        results = [bench_worker(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(bench_worker, jobs)
    clips = sum(r["clips"] for r in results)
    rates = [r["clips"] / r["wall"] for r in results]  # timed stages only: no start-up, not the other path
    out = {stage: 1000 * sum(r[stage] for r in results) / clips for stage in STAGES}
    out["per_worker"] = float(np.mean(rates))
    out["total"] = float(np.sum(rates))
    if compare_public:
        out.update({f"public_{s}": 1000 * sum(r[f"public_{s}"] for r in results) / clips for s in STAGES})
        out["public_per_worker"] = float(np.mean([r["clips"] / r["public_wall"] for r in results]))
        out["ratio"] = out["per_worker"] / out["public_per_worker"]
    return out


def _long_file_read(args: tuple) -> Dict[str, float]:
    """In a fresh process: (path, target_length, cropped?) -> seconds and peak memory growth (MiB) of one clip."""
    import resource

    from sslam_plugin.data.manifest import Manifest
    from sslam_plugin.data.robust import RobustClipReader
    from sslam_plugin.features import waveform_to_features

    path, target_length, cropped = args
    torch.set_num_threads(1)
    fbank = FbankConfig(target_length=target_length)
    reader = RobustClipReader(Manifest(path=Path(path).parent, root=Path(path).parent, files=[Path(path).name]), fbank)
    waveform_to_features(torch.zeros(16000), 16000, fbank)  # the first call's allocations are not the file's
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if cropped:
        features = reader.features(0)
    else:  # before: decode all, resample all, fbank all, keep the first target_length frames
        waveform, rate = load_audio(path)
        features = waveform_to_features(waveform, rate, fbank)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB on Linux
    assert features.shape == (target_length, fbank.num_mel_bins)
    return {"seconds": seconds, "peak_mib": peak / 1024}


def long_file_benchmark(minutes: float, rate: int, channels: int, fmt: str, target_length: int) -> List[Dict[str, object]]:
    """One clip of a ``minutes``-long file, read as now (cropped) and as before (whole): rows for a table."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / f"long.{fmt}")
        rng = np.random.default_rng(0)
        with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16") as out:
            total = int(minutes * 60 * rate)
            for begin in range(0, total, 60 * rate):  # a minute at a time: the file, not this process, is large
                t = np.arange(begin, min(total, begin + 60 * rate)) / rate
                clip = (0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) + 0.05 * rng.standard_normal(len(t)))
                out.write(np.stack([clip.astype(np.float32)] * channels, axis=1))
        size = Path(path).stat().st_size / 2**20
        rows = []
        for cropped in (True, False):
            with multiprocessing.get_context("spawn").Pool(1) as pool:  # a fresh process: its own peak
                result = pool.map(_long_file_read, [(path, target_length, cropped)])[0]
            rows.append(dict(result, read="first crop (now)" if cropped else "whole file (before)", file_mib=size))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, help="benchmark these clips (the first --clips of them)")
    parser.add_argument("--clips", type=int, default=64, help="clips per worker")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="worker counts to try")
    parser.add_argument("--seconds", type=float, default=10.0, help="synthetic clip length")
    parser.add_argument("--sample-rate", type=int, default=16000, help="synthetic clip sample rate")
    parser.add_argument("--channels", type=int, default=1, help="synthetic clip channels")
    parser.add_argument("--format", default="wav", choices=["wav", "flac"], help="synthetic clip format")
    parser.add_argument("--target-length", type=int, default=1024, help="frames per clip")
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--clone-batch", type=int, default=16, help="masks per clip")
    parser.add_argument(
        "--compare-public", action=argparse.BooleanOptionalAction, default=True,
        help="also time the public EAT data path on the same files, in turn (default: on)",
    )
    parser.add_argument(
        "--worker-setup", action=argparse.BooleanOptionalAction, default=True,
        help="set each worker up as training's DataLoader workers are (data.workers: freed buffers kept "
        "for reuse); applies to both paths, which share the worker (default: on)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--long-file", type=float, default=None, metavar="MINUTES",
        help="instead: one clip of a file this long, read now (its beginning) and before (whole)",
    )
    args = parser.parse_args(argv)
    report = []
    if args.long_file is not None:
        if args.long_file <= 0:
            parser.error("--long-file takes a positive number of minutes")
        rows = long_file_benchmark(args.long_file, args.sample_rate, args.channels, args.format, args.target_length)
        print(f"one {args.long_file:g}-minute {args.format} file, {args.sample_rate} Hz, {args.channels} ch "
              f"({rows[0]['file_mib']:.0f} MiB); target_length {args.target_length}; one torch thread")
        print(f"{'read':>20} {'seconds':>8} {'peak MiB':>9}")
        for row in rows:
            print(f"{row['read']:>20} {row['seconds']:>8.3f} {row['peak_mib']:>9.0f}")
        if args.json is not None:
            args.json.write_text(json.dumps(rows, indent=1))
        return 0

    fbank = FbankConfig(target_length=args.target_length)
    with tempfile.TemporaryDirectory() as tmp:
        if args.manifest:
            try:
                manifest = read_manifest(args.manifest)
            except (ManifestError, OSError) as err:
                return fail(err)
            paths = [str(manifest.full_path(i)) for i in range(min(args.clips, len(manifest)))]
            source = f"{len(paths)} clips of {args.manifest}"
        else:
            paths = make_clips(Path(tmp), args.clips, args.seconds, args.sample_rate, args.channels, args.format)
            source = f"{len(paths)} synthetic {args.seconds:g} s {args.format} clips, {args.sample_rate} Hz, {args.channels} ch"
        setup = "training's worker set-up" if args.worker_setup else "no worker set-up"
        print(f"{source}; target_length {args.target_length}, clone_batch {args.clone_batch}; "
              f"torch threads per worker: 1; {setup}")
        print(f"{'workers':>7} {'clips/s/worker':>15} {'clips/s total':>14} " + " ".join(f"{s + ' ms':>11}" for s in STAGES))
        for workers in args.workers:
            r = run(paths, workers, fbank, args.patch_size, args.clone_batch, args.compare_public, args.worker_setup)
            report.append(dict(r, workers=workers, source=source, worker_setup=args.worker_setup))
            print(
                f"{workers:>7} {r['per_worker']:>15.1f} {r['total']:>14.1f} "
                + " ".join(f"{r[s]:>11.2f}" for s in STAGES)
            )
            if args.compare_public:
                print(
                    f"{'public':>7} {r['public_per_worker']:>15.1f} {r['public_per_worker'] * workers:>14.1f} "
                    + " ".join(f"{r['public_' + s]:>11.2f}" for s in STAGES)
                    + f"   (ours / public: {r['ratio']:.2f}x)"
                )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
