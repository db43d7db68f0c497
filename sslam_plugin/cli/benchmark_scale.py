"""``sslam-benchmark scale``: what a manifest and the audio behind it cost as the corpus grows.

Manifests. For each ``--rows N``, an N-row manifest of distinct AudioSet-like
names ``unbal/<11 characters>.wav``, hard links to the ``--corpus`` real clips
of a generated corpus (directory entries, no data), so every row can be read.
In a fresh process per size: **load s** (:func:`read_manifest`); **parent MiB**
(resident memory after the load minus before; the peak's growth); **worker
MiB**: ``--workers`` processes forked after the load (as DataLoader workers
are) each touch every row once as the datasets' ``__getitem__`` does
(``manifest.full_path(i)``, ``manifest.num_samples[i]``), then report their
private memory (``Private_Clean + Private_Dirty``, ``/proc/self/smaps_rollup``:
the pages copy-on-write copied out of the parent); **growth** is over the pass
alone. A few rows spread over the manifest are then decoded (**rows read**).
``--compare-lists`` (default on): the same rows held as Python lists of ``str``
and ``int`` (the manifest before packed arrays), for comparison.

Reading. ``--read-clips`` clips of the corpus (``--clip-seconds`` long, 32 kHz
mono 16-bit WAV: AudioSet's length at the public EAT HDF5 rate) decoded with
:func:`load_audio` from loose files, from zip shards written by ``sslam-pack``
(:func:`sslam_plugin.data.packing.pack_manifest`) and from HDF5 files in the
public EAT layout (``part0.h5/CLIP_ID``, written with h5py): clips per second
in one process, the formats in turn, best of ``--repeats`` passes, files just
written (page cache warm) under ``--workdir``; all three must decode to the
same samples.

Usage: sslam-benchmark scale [--rows 10000 100000 1000000 2000000] [--workers 2]
           [--corpus 300] [--read-clips 300] [--clip-seconds 10] [--shard-size 100]
           [--repeats 3] [--workdir /tmp] [--json out.json] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["add_rows", "clip_ids", "make_corpus", "markdown", "measure_manifest", "read_speeds", "run",
           "write_rows_manifest", "main"]

CORPUS_RATE = 32000  # the public EAT HDF5 rate
_ID_CHARS = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", dtype="S1")
MIB = 1024.0 * 1024.0
CHECKED_ROWS = 8  # rows of each manifest decoded after the memory passes: every row names a real clip


def clip_ids(first: int, count: int) -> List[str]:
    """AudioSet-like 11-character ids, distinct for distinct row numbers (an odd multiplier mod 2**64)."""
    rows = np.arange(first, first + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        codes = rows * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x2545F4914F6CDD1D)
    digits = (codes[:, None] >> (np.arange(11, dtype=np.uint64) * np.uint64(6))) & np.uint64(63)
    return _ID_CHARS[digits.astype(np.intp)].view("S11").ravel().astype(str).tolist()


def make_corpus(folder: Path, count: int, seconds: float) -> Path:
    """``count`` WAV clips ``unbal/<id>.wav`` (noisy tones, 16-bit, 32 kHz) and ``corpus.tsv`` listing them."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    (folder / "unbal").mkdir(parents=True, exist_ok=True)
    n = int(seconds * CORPUS_RATE)
    t = np.arange(n) / CORPUS_RATE
    lines = [str(folder)]
    for clip_id in clip_ids(0, count):
        clip = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) + 0.05 * rng.standard_normal(n)
        sf.write(str(folder / "unbal" / f"{clip_id}.wav"), clip.astype(np.float32), CORPUS_RATE, subtype="PCM_16")
        lines.append(f"unbal/{clip_id}.wav\t{n}")
    path = folder / "corpus.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def add_rows(corpus: Path, rows: int) -> List[str]:
    """Lines for ``rows`` rows, each a distinct name; rows past the corpus are hard links to its clips."""
    lines = corpus.read_text(encoding="utf-8").splitlines()
    root, body = Path(lines[0]), [line for line in lines[1:] if line]
    out = body[:rows]
    for first in range(len(body), rows, 100_000):
        for k, clip_id in enumerate(clip_ids(first, min(100_000, rows - first))):
            rel, count = body[(first + k) % len(body)].split("\t")
            try:  # a directory entry, no inode: cheap, and the row reads as its clip
                os.link(root / rel, root / "unbal" / f"{clip_id}.wav")
            except OSError:  # a file system without hard links (or too many to one file)
                os.symlink(root / rel, root / "unbal" / f"{clip_id}.wav")
            out.append(f"unbal/{clip_id}.wav\t{count}")
    return out


def write_rows_manifest(root: Path, lines: Sequence[str], target: Path) -> Path:
    with target.open("w", encoding="utf-8", newline="\n") as out:
        out.write(f"{root}\n" + "\n".join(lines) + "\n")
    return target


def private_mib() -> Optional[float]:
    """This process's private memory (Private_Clean + Private_Dirty, smaps_rollup); None where /proc lacks it."""
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return None
    private = [line for line in text.splitlines() if line.startswith(("Private_Clean:", "Private_Dirty:"))]
    kib = sum(int(line.split()[1]) for line in private)
    return kib / 1024.0


def resident_mib() -> float:
    """This process's resident memory (``/proc/self/statm``: Linux, as the benchmark's workers are forked)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def _forked_passes(touch: Callable[[], int], workers: int) -> List[Dict[str, float]]:
    """Fork ``workers`` processes that each run ``touch`` once; their private memory before and after, in MiB."""
    children = []
    for _ in range(workers):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: measure, touch every row, measure, report, leave without clean-up
            status = 1
            try:
                os.close(read_end)
                before = private_mib()
                start = time.perf_counter()
                touched = touch()
                seconds = time.perf_counter() - start
                after = private_mib()
                report = {"private_before_mib": before, "private_mib": after, "pass_s": seconds, "rows": touched}
                os.write(write_end, json.dumps(report).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        children.append((pid, read_end))
    results = []
    for pid, read_end in children:  # the parent only waits: its pages stay as they were at the fork
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or not data:
            raise RuntimeError(f"a benchmark worker (pid {pid}) failed with status {status}")
        results.append(json.loads(data))
    return results


def _worker_summary(results: List[Dict[str, float]], prefix: str) -> Dict[str, object]:
    growth = [None if r["private_mib"] is None else r["private_mib"] - r["private_before_mib"] for r in results]
    return {f"{prefix}worker_private_mib": [r["private_mib"] for r in results], f"{prefix}worker_growth_mib": growth,
            f"{prefix}worker_pass_s": [r["pass_s"] for r in results],
            f"{prefix}worker_rows": [r["rows"] for r in results]}


def measure_manifest(path: Path, workers: int, compare_lists: bool) -> Dict[str, object]:
    """Load ``path`` and fork ``workers`` that touch every row (in this process: run it in a fresh one)."""
    import resource

    from sslam_plugin.data.manifest import read_manifest

    rss0, peak0 = resident_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    start = time.perf_counter()
    manifest = read_manifest(path)
    load_s = time.perf_counter() - start
    out: Dict[str, object] = {
        "rows": len(manifest), "manifest_mib": path.stat().st_size / MIB, "load_s": load_s,
        "parent_mib": resident_mib() - rss0,
        "parent_peak_mib": max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - peak0),
        "files_type": type(manifest.files).__name__,
    }

    def touch_manifest() -> int:
        n = 0
        for i in range(len(manifest)):
            manifest.full_path(i)
            int(manifest.num_samples[i])
            n += 1
        return n

    out.update(_worker_summary(_forked_passes(touch_manifest, workers), ""))
    from sslam_plugin.data.audio import load_audio

    spread = sorted({i * (len(manifest) - 1) // max(1, CHECKED_ROWS - 1) for i in range(CHECKED_ROWS)})
    out["rows_read"] = [len(spread), sum(len(load_audio(manifest.full_path(i))[0]) > 0 for i in spread)]
    if compare_lists:
        rss1 = resident_mib()
        root, files, counts = manifest.root, list(manifest.files), [int(n) for n in manifest.num_samples]
        out["lists_parent_mib"] = resident_mib() - rss1  # what the lists hold (the arrays are still there)

        def touch_lists() -> int:
            n = 0
            for i in range(len(files)):
                root / files[i]
                counts[i]
                n += 1
            return n

        out.update(_worker_summary(_forked_passes(touch_lists, workers), "lists_"))
    return out


def _measure_in_fresh_process(path: Path, workers: int, compare_lists: bool) -> Dict[str, object]:
    code = (
        "import json, sys; from pathlib import Path; from sslam_plugin.cli.benchmark_scale import measure_manifest; "
        "print(json.dumps(measure_manifest(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == '1')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), str(workers), "1" if compare_lists else "0"],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"measuring {path} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _pack_zip(corpus: Path, dest: Path, shard_size: int) -> Path:
    from sslam_plugin.data.packing import pack_manifest

    report = pack_manifest(corpus, dest, shard_size=shard_size)
    return Path(report.manifest)


def _pack_h5(corpus: Path, dest: Path, shard_size: int) -> Path:
    """The public EAT layout: ``partK.h5`` files, dataset ``CLIP_ID`` holding the 32 kHz samples as stored."""
    import h5py
    import soundfile as sf

    from sslam_plugin.data.manifest import read_manifest

    manifest = read_manifest(corpus)
    dest.mkdir(parents=True, exist_ok=True)
    lines = [str(dest)]
    for first in range(0, len(manifest), shard_size):
        part = f"part{first // shard_size}.h5"
        with h5py.File(dest / part, "w") as out:
            for i in range(first, min(len(manifest), first + shard_size)):
                samples, _ = sf.read(str(manifest.full_path(i)), dtype="int16")
                clip_id = Path(manifest.files[i]).stem
                out.create_dataset(clip_id, data=samples)
                lines.append(f"{part}/{clip_id}\t{len(samples)}")
    path = dest / "corpus.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_speeds(corpus: Path, workdir: Path, clips: int, shard_size: int, repeats: int) -> List[Dict[str, object]]:
    """Clips per second decoding ``clips`` clips with :func:`load_audio`: loose files, zip shards, HDF5."""
    from sslam_plugin.data.audio import load_audio
    from sslam_plugin.data.manifest import read_manifest

    sources: Dict[str, object] = {"loose files": corpus}
    for name, pack in (("zip shards", _pack_zip), ("HDF5 (EAT layout)", _pack_h5)):
        try:
            sources[name] = pack(corpus, workdir / name.split()[0].lower(), shard_size)
        except ImportError as err:  # h5py is an optional extra; sslam-pack may be absent in an old install
            sources[name] = f"not measured ({err})"
    paths: Dict[str, List[str]] = {}
    for name, manifest_path in sources.items():
        if isinstance(manifest_path, Path):
            manifest = read_manifest(manifest_path)
            paths[name] = [str(manifest.full_path(i % len(manifest))) for i in range(clips)]
    times: Dict[str, List[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, entries in paths.items():  # the formats in turn, under the same load
            start = time.perf_counter()
            for entry in entries:
                load_audio(entry)
            times[name].append(time.perf_counter() - start)
    decoded = {name: [load_audio(entry)[0].numpy() for entry in entries] for name, entries in paths.items()}
    samples = {name: sum(len(w) for w in waves) for name, waves in decoded.items()}
    rows: List[Dict[str, object]] = []
    loose = clips / min(times["loose files"])
    for name, source in sources.items():
        if name not in paths:
            rows.append({"storage": name, "clips": 0, "error": source})
            continue
        best = clips / min(times[name])
        rows.append({
            "storage": name, "clips": clips, "clips_per_s": best,
            "median_clips_per_s": clips / float(np.median(times[name])), "vs_loose": best / loose,
            "mb_per_s": samples[name] * 2 / 1e6 * best / clips,
            "same_samples_as_loose": all(np.array_equal(a, b) for a, b in zip(decoded[name], decoded["loose files"])),
            "files": len({entry.split(".zip:")[0].split(".h5/")[0] for entry in paths[name]}),
        })
    return rows


def run(
    rows: Sequence[int], workers: int, corpus_size: int, read_clips: int, clip_seconds: float,
    shard_size: int, repeats: int, compare_lists: bool = True, workdir: Optional[Path] = None,
    log: Callable[[str], None] = lambda text: None,
) -> Dict[str, object]:
    """The whole benchmark: ``{"manifests": [per size], "reading": [per storage], "setup": {...}}``."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="sslam-scale-") as tmp:
        folder = Path(tmp)
        log(f"writing {corpus_size} clips of {clip_seconds:g} s")
        corpus_root = folder / "loose"
        corpus = make_corpus(corpus_root, corpus_size, clip_seconds)
        log(f"naming {max(rows)} rows (hard links to the clips)")
        rows_lines = add_rows(corpus, max(rows))
        sizes = []
        for n in rows:
            log(f"{n} rows: writing the manifest, loading it, {workers} worker passes")
            path = write_rows_manifest(corpus_root, rows_lines[:n], folder / f"rows_{n}.tsv")
            sizes.append(_measure_in_fresh_process(path, workers, compare_lists))
            path.unlink()
        log(f"reading {read_clips} clips from each storage")
        reading = read_speeds(corpus, folder, read_clips, shard_size, repeats)
    setup = {
        "workers": workers, "corpus_clips": corpus_size, "clip_seconds": clip_seconds, "sample_rate": CORPUS_RATE,
        "shard_size": shard_size, "repeats": repeats, "cpus": os.cpu_count(), "python": sys.version.split()[0],
    }
    return {"manifests": sizes, "reading": reading, "setup": setup}


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _spread(values: Sequence[Optional[float]]) -> str:
    """One worker's value, or ``min-max`` over the workers."""
    known = [_fmt(v) for v in sorted(v for v in values if v is not None)]
    return "n/a" if not known else known[0] if known[0] == known[-1] else f"{known[0]}-{known[-1]}"


def markdown(result: Dict[str, object]) -> str:
    """The two tables (manifests by size; reading by storage) as Markdown."""
    setup = result["setup"]
    lists = any("lists_worker_private_mib" in r for r in result["manifests"])
    head = "| rows | manifest MiB | load s | parent MiB (peak) | worker private MiB | worker growth MiB | rows read |"
    rule = "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    if lists:
        head += " as lists: parent MiB | as lists: worker private MiB |"
        rule += " ---: | ---: |"
    lines = [f"Manifests ({setup['workers']} forked workers, each touching every row once):", "", head, rule]
    for r in result["manifests"]:
        line = (
            f"| {r['rows']:,} | {r['manifest_mib']:.1f} | {r['load_s']:.2f} | {r['parent_mib']:.1f} "
            f"({r['parent_peak_mib']:.1f}) | {_spread(r['worker_private_mib'])} | {_spread(r['worker_growth_mib'])} | "
            f"{r['rows_read'][1]}/{r['rows_read'][0]} |"
        )
        if lists:
            line += f" {_fmt(r.get('lists_parent_mib'))} | {_spread(r.get('lists_worker_private_mib', []))} |"
        lines.append(line)
    lines += [
        "", f"Reading ({setup['clip_seconds']:g} s clips, {setup['sample_rate']} Hz mono 16-bit, load_audio, "
        f"one process, best of {setup['repeats']}; shards of {setup['shard_size']} clips):", "",
        "| storage | clips | clips/s | median clips/s | MB/s (samples) | vs loose | files | same samples |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in result["reading"]:
        lines.append(f"| {r['storage']} | - | {r['error']} | | | | | |" if "error" in r else (
            f"| {r['storage']} | {r['clips']} | {r['clips_per_s']:.0f} | {r['median_clips_per_s']:.0f} | "
            f"{r['mb_per_s']:.0f} | {r['vs_loose']:.2f}x | {r['files']} | "
            f"{'yes' if r['same_samples_as_loose'] else 'NO'} |"
        ))
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 2_000_000],
                        help="manifest sizes to measure")
    parser.add_argument("--workers", type=int, default=2, help="forked workers per size")
    parser.add_argument("--corpus", type=int, default=300, help="real clips behind the rows")
    parser.add_argument("--read-clips", type=int, default=300, help="clips decoded per storage and pass")
    parser.add_argument("--clip-seconds", type=float, default=10.0, help="length of the corpus clips")
    parser.add_argument("--shard-size", type=int, default=100, help="clips per zip shard and per HDF5 part")
    parser.add_argument("--repeats", type=int, default=3, help="reading passes per storage (the best is reported)")
    parser.add_argument("--compare-lists", action=argparse.BooleanOptionalAction, default=True,
                        help="also hold the rows as Python lists, the manifest before packed arrays (default: on)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the temporary files (default: TMPDIR)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    args = parser.parse_args(argv)
    if min(args.rows + [args.workers, args.corpus, args.read_clips, args.repeats, args.shard_size]) < 1:
        parser.error("--rows, --workers, --corpus, --read-clips, --repeats and --shard-size take positive numbers")
    result = run(
        args.rows, args.workers, args.corpus, args.read_clips, args.clip_seconds, args.shard_size, args.repeats,
        args.compare_lists, args.workdir, log=lambda text: print(text, file=sys.stderr),
    )
    print(markdown(result), end="")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
