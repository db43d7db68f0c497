"""A few fairseq fp16 updates of the pre-training model with the fairseq adapter's speed replacements on and
off, from the same start: the losses of each update (equal to fp16 tolerance) and the step time of each.

The update is the training's (``sslam_plugin.cli.benchmark_pretraining.TrainingStep``: fairseq's optimiser
from the stage's recipe, fairseq's FP16Optimizer, the adapter installed), switched as
``SSLAM_FAIRSEQ_SPEEDUPS=1/0`` switches it. Needs a CUDA device; ``--cpu`` runs the same check on the CPU
(bfloat16 there, where the two paths must agree bit for bit), for tests of this script.

    python benchmarks/fairseq_speedups_check.py --json OUT.json [--size base] [--updates 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict

import torch

REL_TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 3e-2}  # a few ulps of the loss, compounded over the updates


def run(speedups: bool, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> Dict[str, Any]:
    from sslam_plugin.cli.benchmark_pretraining import TrainingStep, batch, build

    torch.manual_seed(0)  # the same start for both
    model = build(args.size, args.stage, device).to(dtype).train()
    step = TrainingStep(model, args.stage, dtype, speedups, device)
    fbank, mask = batch(args.batch, args.frames, model.cfg.clone_batch, device, dtype)
    losses, times, skipped = [], [], 0
    for update in range(1, args.updates + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out, finite = step.step(fbank, mask, update)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        losses.append(float(sum(v.detach().float() for v in out.losses.values()) / float(out.sample_size)))
        skipped += not finite
    timed = times[1:] or times  # the first update builds the optimiser state
    return {"speedups": speedups, "losses": losses, "skipped_updates": skipped,
            "step_ms_median": round(1000 * statistics.median(timed), 2), "step_ms": [round(1000 * t, 2) for t in times]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="base")
    parser.add_argument("--stage", type=int, default=1)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--updates", type=int, default=6)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU in bfloat16 (a test of this script)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA device visible (torch.cuda.is_available() is False): this check needs a GPU; "
              "--cpu runs it on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    dtype = torch.bfloat16 if args.cpu else torch.float16
    on, off = run(True, args, device, dtype), run(False, args, device, dtype)
    diffs = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(on["losses"], off["losses"])]
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""), "size": args.size, "stage": args.stage, "updates": args.updates,
        "on": on, "off": off, "loss_max_rel_diff": max(diffs), "tolerance": REL_TOLERANCE[dtype],
        "within_tolerance": max(diffs) <= REL_TOLERANCE[dtype],
        "speedup": round(off["step_ms_median"] / on["step_ms_median"], 3),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text)
    print(f"fairseq speed replacements on/off: losses max rel diff {result['loss_max_rel_diff']:.2e} "
          f"(tolerance {result['tolerance']:.0e}); step {on['step_ms_median']} ms on, {off['step_ms_median']} ms off "
          f"({result['speedup']}x)")
    return 0 if result["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
