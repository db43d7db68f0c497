"""Benchmark the training data path: clips per second per DataLoader-like worker.

Per clip, the work of one pre-training item: decode (soundfile, channels
averaged), resample to 16 kHz, Kaldi fbank + pad/crop + normalise, and
``clone_batch`` inverse block masks. Each worker is a process with one torch
thread (as in a DataLoader worker); stage times are per clip, averaged.

The public EAT data path does the same per-clip work (soundfile read,
torchaudio's Kaldi fbank with the same arguments at 16 kHz, pad/crop,
normalise; its masks are drawn in the model), so clips/s per worker from this
script and from EAT's dataset on the same files and the same CPU compare
directly.

Without --manifest, CLIPS synthetic clips are written to a temporary folder
(--sample-rate 44100 --channels 2 includes resampling and down-mixing).

Usage: sslam-benchmark data [--manifest train.tsv] [--clips 64] [--workers 1 2]
           [--seconds 10] [--sample-rate 16000] [--channels 1] [--format wav]
           [--target-length 1024] [--clone-batch 16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

import soundfile as sf
import torch

from sslam_plugin.data.audio import load_audio
from sslam_plugin.data.manifest import read_manifest
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


def bench_worker(job: Dict) -> Dict[str, float]:
    """Process ``job['paths']`` once (after one warm-up clip); returns seconds per stage and the clip count."""
    torch.set_num_threads(1)
    cfg: FbankConfig = job["fbank"]
    grid = (cfg.target_length // job["patch_size"], cfg.num_mel_bins // job["patch_size"])
    totals = dict.fromkeys(STAGES, 0.0)

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

    one(job["paths"][0], 0, timed=False)
    start = time.perf_counter()
    for i, path in enumerate(job["paths"]):
        one(path, i, timed=True)
    totals["wall"] = time.perf_counter() - start
    totals["clips"] = float(len(job["paths"]))
    return totals


def run(paths: Sequence[str], workers: int, fbank: FbankConfig, patch_size: int, clone_batch: int) -> Dict[str, float]:
    jobs = [
        {"paths": list(paths[w:]) + list(paths[:w]), "fbank": fbank, "patch_size": patch_size, "clone_batch": clone_batch}
        for w in range(workers)
    ]
    if workers == 1:
        results = [bench_worker(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(bench_worker, jobs)
    clips = sum(r["clips"] for r in results)
    rates = [r["clips"] / r["wall"] for r in results]  # steady state: worker start-up is not timed
    out = {stage: 1000 * sum(r[stage] for r in results) / clips for stage in STAGES}
    out["per_worker"] = float(np.mean(rates))
    out["total"] = float(np.sum(rates))
    return out


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
    args = parser.parse_args(argv)

    fbank = FbankConfig(target_length=args.target_length)
    with tempfile.TemporaryDirectory() as tmp:
        if args.manifest:
            manifest = read_manifest(args.manifest)
            paths = [str(manifest.full_path(i)) for i in range(min(args.clips, len(manifest)))]
            source = f"{len(paths)} clips of {args.manifest}"
        else:
            paths = make_clips(Path(tmp), args.clips, args.seconds, args.sample_rate, args.channels, args.format)
            source = f"{len(paths)} synthetic {args.seconds:g} s {args.format} clips, {args.sample_rate} Hz, {args.channels} ch"
        print(f"{source}; target_length {args.target_length}, clone_batch {args.clone_batch}; torch threads per worker: 1")
        print(f"{'workers':>7} {'clips/s/worker':>15} {'clips/s total':>14} " + " ".join(f"{s + ' ms':>11}" for s in STAGES))
        for workers in args.workers:
            r = run(paths, workers, fbank, args.patch_size, args.clone_batch)
            print(
                f"{workers:>7} {r['per_worker']:>15.1f} {r['total']:>14.1f} "
                + " ".join(f"{r[s]:>11.2f}" for s in STAGES)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
