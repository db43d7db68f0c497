"""``sslam-benchmark {pretraining,data,scale} ...``: the project's benchmarks behind one command."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

BENCHMARKS = {
    "pretraining": "pre-training steps: time, memory, model FLOPs utilisation, optimised vs plain",
    "data": "the data path (decode, resample, fbank, masks): clips per second per worker",
    "scale": "manifests of 10k to 2M rows (load time, parent and worker memory); loose vs zip vs HDF5 reading",
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        lines = "\n".join(f"  {name:12s} {text}" for name, text in BENCHMARKS.items())
        print(f"usage: sslam-benchmark {{{','.join(BENCHMARKS)}}} [options]\n\n{lines}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "pretraining":
        from sslam_plugin.cli.benchmark_pretraining import main as run
    elif argv[0] == "scale":
        from sslam_plugin.cli.benchmark_scale import main as run
    else:
        from sslam_plugin.cli.benchmark_data import main as run
    return run(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
