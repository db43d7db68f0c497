"""Benchmark pre-training steps on the CPU or a GPU: time, memory, MFU, fast vs plain, through the training code.

For each stage (1: EAT, 2: SSLAM), precision (float32, float16, bfloat16 on
CUDA; float32 on the CPU) and mode, casts the student as fairseq's trainer does
(``model.half()`` / ``model.to(bfloat16)``, the teacher stays float32) and runs
forward + backward + the optimiser update + EMA. The update is the one that
trains: fairseq's optimiser built from the stage's recipe (``eat_stage1``,
``sslam_stage2``: composite Adam groups, fairseq's ``FP16Optimizer`` with float32
master weights and a dynamic loss scale for fp16/bf16), stepped as fairseq's
trainer steps it, with the plugin's fairseq adapter installed
(:mod:`sslam_plugin.training.optimizer_path`). It reports the median step time,
peak GPU memory, model FLOPs utilisation and whether every loss and gradient is
finite. The modes run in the same process on the same batch and the same
initial weights, so the speed-up is a ratio from one run:

- ``plain``: the straightforward model step (boolean-mask indexing,
  per-parameter EMA loop) and fairseq's own optimiser code (the adapter's
  speed replacements off, as with ``SSLAM_FAIRSEQ_SPEEDUPS=0``);
- ``fast``: ``PretrainingConfig.fast_step`` (index lists built once per step,
  one host sync, foreach EMA) and the adapter's multi-tensor Adam and
  mixed-precision bookkeeping;
- ``compiled``: the fast step with ``compile_modules`` (torch.compile of the
  blocks and decoder, ``--compile-mode``); ``--compile`` adds it to ``--modes``.

``--speedups on|off`` sets the adapter's speed replacements for every mode
instead (default ``auto``: off for plain, on otherwise). The first-step losses
of the modes are compared (``first_step_max_rel_diff``). MFU = FLOPs counted
from the shapes (:mod:`sslam_plugin.models.flops`) / step time / the device's
peak for the precision: ``--peak-tflops``, else a built-in table of dense
tensor-core peaks for known GPUs (none for the CPU). ``--profile DIR`` writes a
torch.profiler breakdown of one step per case. A case that fails (out of
memory, a compiler error) is recorded with its error and the others still run;
``--json`` is rewritten after every case, so a run stopped part way keeps what
it measured.

Usage:
    sslam-benchmark pretraining [--size base|small|tiny] [--batch 12] [--frames 1024]
        [--steps 5] [--modes plain,fast,compiled] [--dtypes float16,bfloat16] [--speedups auto|on|off]
        [--compile] [--compile-mode default|reduce-overhead|...]
        [--peak-tflops T] [--profile DIR] [--golden DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sslam_plugin.checkpoints.official_names import pretrainer_from_official
from sslam_plugin.cli.benchmark_measures import (
    compare, model_flops_utilisation, peak_tflops, step_shape, teacher_target_errors,
)
from sslam_plugin.cli import fail
from sslam_plugin.cli.benchmark_profile import profile_step
from sslam_plugin.masking import inverse_block_mask
from sslam_plugin.mixing import MixingConfig
from sslam_plugin.models import BootstrapPretrainer, DecoderConfig, EncoderConfig, PretrainingConfig
from sslam_plugin.models.flops import step_flops
from sslam_plugin.models.pretraining import COMPILE_MODES
from sslam_plugin.models.source_retention import SourceRetentionPretrainer

logger = logging.getLogger(__name__)

SIZES = {
    "base": dict(encoder=dict(embed_dim=768, depth=12, num_heads=12), decoder=dict(dim=768, layers=6)),
    "small": dict(encoder=dict(embed_dim=192, depth=12, num_heads=3), decoder=dict(dim=192, layers=6)),
    "tiny": dict(encoder=dict(embed_dim=192, depth=2, num_heads=3), decoder=dict(dim=192, layers=2)),
}
MODES = ("plain", "fast", "compiled")
RECIPES = Path(__file__).resolve().parents[1] / "config" / "pretrain"
STAGE_RECIPES = {1: "eat_stage1", 2: "sslam_stage2"}

def build(
    size: str, stage: int, device: torch.device, fast: bool = True, compile_modules: bool = False,
    compile_mode: str = "default",
) -> BootstrapPretrainer:
    spec = SIZES[size]
    cfg = PretrainingConfig(
        encoder=EncoderConfig(**spec["encoder"]),
        decoder=DecoderConfig(**spec["decoder"]),
        clone_batch=16 if stage == 1 else 8,
        average_top_k_layers=spec["encoder"]["depth"],
        utterance_target_layers=None if stage == 1 else 1,
        fast_step=fast,
        compile_modules=compile_modules,
        compile_mode=compile_mode,
    )
    model = BootstrapPretrainer(cfg) if stage == 1 else SourceRetentionPretrainer(cfg, MixingConfig(enabled=True))
    return model.to(device)


def batch(clips: int, frames: int, clones: int, device: torch.device, dtype: torch.dtype):
    fbank = torch.randn(clips, 1, frames, 128, device=device).to(dtype)
    grid = (frames // 16, 8)
    mask = np.concatenate([inverse_block_mask(grid, clones, rng=np.random.default_rng(i)) for i in range(clips)])
    return fbank, torch.from_numpy(mask).to(device)


class TrainingStep:
    """The training code's update around the model: fairseq's optimiser from the stage's recipe, through the adapter."""

    def __init__(self, model: BootstrapPretrainer, stage: int, dtype: torch.dtype, speedups: bool, device: torch.device):
        from sslam_plugin.training.fairseq_adapter import install
        from sslam_plugin.training.optimizer_path import build_optimizer, compose_recipe

        self.model, self.speedups, self.device, self._install = model, speedups, device, install
        install(speedups=speedups)
        half = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype)
        overrides = ["task.data=/unused", f"common.fp16={half == 'fp16'}", f"common.bf16={half == 'bf16'}"]
        cfg = compose_recipe(RECIPES, STAGE_RECIPES[stage], overrides)
        warmup = cfg.optimizer.groups.default.lr_scheduler.get("warmup_updates") or 0
        self.optimizer = build_optimizer(cfg, [p for p in model.parameters() if p.requires_grad], num_updates=warmup)
        self.clip_norm = float(cfg.optimization.clip_norm)

    def step(self, fbank: torch.Tensor, mask: torch.Tensor, update: int) -> Tuple[Any, bool]:
        out = self.forward(fbank, mask, update)
        self.backward(out)
        finite = self.update(out)
        self.model.ema_step(update)
        return out, finite

    def forward(self, fbank: torch.Tensor, mask: torch.Tensor, update: int) -> Any:
        # decoder noise from a generator of the update, not the global one, so the modes draw the same
        noise = torch.Generator(device=self.device).manual_seed(update)
        return self.model(fbank, mask, noise)

    def backward(self, out: Any) -> None:
        self.optimizer.backward(sum(out.losses.values()))  # scaled by the loss scale in fp16, as the trainer's

    def update(self, out: Any = None) -> bool:
        """The trainer's update: gradients over the sample size, clip, step; False = skipped (overflow)."""
        self._install(speedups=self.speedups)  # the cases take turns: each with its own setting
        sample_size = 1.0 if out is None else float(out.sample_size)
        try:
            self.optimizer.multiply_grads(1.0 / sample_size)
            self.optimizer.clip_grad_norm(self.clip_norm)
            self.optimizer.step()
            finite = True
        except OverflowError:  # fairseq's loss scaler: the trainer skips the update and lowers the scale
            finite = False
        self.optimizer.zero_grad()
        return finite


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Case:
    """One stage, precision and mode: a model, the training's update around it, a batch and its measurements."""

    def __init__(self, size: str, stage: int, dtype: torch.dtype, mode: str, args: argparse.Namespace, device: torch.device):
        self.size, self.stage, self.dtype, self.args, self.device = size, stage, dtype, args, device
        self.mode = mode
        self.compiled = mode == "compiled"
        self.fast = mode in ("fast", "compiled")
        speedups = getattr(args, "speedups", "auto")
        self.speedups = self.fast if speedups == "auto" else speedups == "on"
        self.error: Optional[str] = None
        self.times: List[float] = []
        self.updates = 0
        self.finite = self.grads_finite = True
        self.first: Dict[str, float] = {}
        self.first_finite = True
        self.losses: Dict[str, float] = {}
        self.model = self.harness = None  # type: ignore[assignment]
        try:
            torch.manual_seed(0)  # the same initial weights in every mode
            model = build(size, stage, device, fast=self.fast, compile_modules=self.compiled,
                          compile_mode=args.compile_mode)
            self.model = model.to(dtype)  # as fairseq's --fp16 / --bf16: the teacher stays float32
            self.model.train()
            self.harness = TrainingStep(self.model, stage, dtype, self.speedups, device)
            self.fbank, self.mask = batch(args.batch, args.frames, self.model.cfg.clone_batch, device, dtype)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: recorded, the other cases run
            self.fail(exc)

    def step(self, timed: bool) -> None:
        """One step; an exception marks the case failed (kept in :meth:`result`) instead of ending the run."""
        if self.error is not None:
            return
        try:
            self._step(timed)
        except Exception as exc:  # noqa: BLE001 - one case's failure must not lose the others' figures
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        logger.error("stage %d %s %s failed: %s", self.stage, self.dtype, self.mode, self.error)
        self.release()

    def release(self) -> None:
        """Drop the model and optimiser state, so that the next case's peak memory is its own."""
        self.model = self.harness = None  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _step(self, timed: bool) -> None:
        _sync(self.device)
        start = time.perf_counter()
        self.updates += 1
        out, step_finite = self.harness.step(self.fbank, self.mask, self.updates)
        _sync(self.device)
        if timed:
            self.times.append(time.perf_counter() - start)
        self.grads_finite &= step_finite
        self.finite &= all(torch.isfinite(v).item() for v in out.losses.values())
        self.losses = {k: float(v.detach()) / float(out.sample_size) for k, v in out.losses.items()}
        if self.updates == 1:
            self.first, self.first_finite = self.losses, bool(self.finite)

    def warmup_steps(self) -> int:
        return 2 if self.compiled else 1  # compiled graphs are built in the first steps

    def result(self) -> Dict[str, Any]:
        args = self.args
        if self.error is not None or not self.times:
            return {"size": self.size, "stage": self.stage, "dtype": str(self.dtype).replace("torch.", ""),
                    "mode": self.mode, "clips": args.batch, "frames": args.frames,
                    "error": self.error or "no timed step"}
        seconds = float(np.median(self.times))
        shape = step_shape(self.model, args.batch, args.frames, self.mask.cpu())
        flops = step_flops(self.model.cfg.encoder, self.model.cfg.decoder, shape)
        device_name = torch.cuda.get_device_name() if self.device.type == "cuda" else "cpu"
        peak = peak_tflops(device_name, self.dtype, args.peak_tflops)
        mfu = model_flops_utilisation(flops["total"], seconds, peak)
        return {
            "size": self.size,
            "stage": self.stage,
            "dtype": str(self.dtype).replace("torch.", ""),
            "mode": self.mode,
            "fairseq_speedups": self.speedups,
            "clips": args.batch,
            "frames": args.frames,
            "step_ms": round(1000 * seconds, 1),
            "step_ms_all": [round(1000 * t, 1) for t in self.times],
            "clips_per_s": round(args.batch / seconds, 1),
            "tflop_per_step": round(flops["total"] / 1e12, 4),
            "achieved_tflops": round(flops["total"] / seconds / 1e12, 3),
            "peak_tflops": peak,
            "mfu": None if mfu is None else round(mfu, 4),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.device.type == "cuda" else None,
            "first_step_losses_finite": self.first_finite,
            "losses_finite": bool(self.finite),
            "grads_finite": bool(self.grads_finite),
            "teacher_float32": all(p.dtype == torch.float32 for p in self.model.teacher.parameters()),
            "first_step_losses_per_patch": self.first,
            "losses_per_patch": {k: round(v, 4) for k, v in self.losses.items()},
        }


def run_cases(cases: List[Case], steps: int, interleave: bool, profile_dir: Optional[Path] = None) -> List[Dict[str, Any]]:
    """Warm up and time every case; with ``interleave`` the cases take turns step by step.

    Taking turns (in alternating order) exposes the modes to the same background
    load, which matters on a shared CPU; on a GPU the cases run one after the
    other so that each one's peak memory is its own.
    """
    results = []
    if interleave:
        for case in cases:
            for _ in range(case.warmup_steps()):
                case.step(timed=False)
        for i in range(steps):
            for case in cases if i % 2 == 0 else cases[::-1]:
                case.step(timed=True)
    for case in cases:
        if not interleave:
            if case.device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            for _ in range(case.warmup_steps()):
                case.step(timed=False)
            for _ in range(steps):
                case.step(timed=True)
        result = case.result()
        if profile_dir is not None and "error" not in result:
            try:
                result["profile"] = profile_step(
                    case.harness, case.fbank, case.mask, case.updates + 1, case.device, profile_dir, result
                )
            except Exception as exc:  # noqa: BLE001 - the timings stand without the profile
                result["profile_error"] = f"{type(exc).__name__}: {exc}"
        results.append(result)
        if not interleave:
            case.release()
    for case in cases if interleave else []:
        case.release()
    return results


def golden_check(golden: Path, device: torch.device) -> Dict[str, float]:
    ckpt = torch.load(golden / "official_eat_tiny_checkpoint.pt", map_location="cpu", weights_only=False)
    model = build("tiny", 1, torch.device("cpu"))
    model.load_state_dict(pretrainer_from_official(ckpt["model"]))
    model = model.to(device).eval()
    out = {}
    for clip in ("clip_16k_6s", "clip_32k_11s"):
        fbank = torch.from_numpy(np.load(golden / f"{clip}.fbank.npy"))[None, None].to(device)
        with torch.no_grad():
            feats = model.encoder(fbank).x[0].float().cpu().numpy()
        out[clip] = float(np.abs(feats - np.load(golden / f"{clip}.features.npy")).max())
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case (after the warm-up)")
    parser.add_argument("--stages", default="1,2", help="stages to run")
    parser.add_argument(
        "--modes", default="plain,fast",
        help="comma-separated: plain (the straightforward step), fast, compiled (fast + torch.compile)",
    )
    parser.add_argument(
        "--speedups", choices=("auto", "on", "off"), default="auto",
        help="the fairseq adapter's speed replacements (SSLAM_FAIRSEQ_SPEEDUPS): auto = off for plain, on otherwise",
    )
    parser.add_argument("--compile", action="store_true", help="add the compiled mode to --modes")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default="default", help="torch.compile mode")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for the precision (MFU)")
    parser.add_argument("--profile", type=Path, default=None, help="profile one step per case into this folder")
    parser.add_argument(
        "--interleave", action=argparse.BooleanOptionalAction, default=None,
        help="modes take turns step by step (default: on the CPU, whose load varies; off on a GPU)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--golden", type=Path, default=None, help="folder of the golden reference (optional)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--dtypes", default="float32,float16,bfloat16", help="CUDA precisions to run")
    parser.add_argument(
        "--teacher-accuracy", action=argparse.BooleanOptionalAction, default=True,
        help="compare the teacher's targets under fp16/bf16 autocast with float32 ones (bf16 only on the CPU)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m for m in args.modes.split(",") if m]
    if args.compile and "compiled" not in modes:
        modes.append("compiled")
    if not modes or not set(modes) <= set(MODES) or not set(args.stages.split(",")) <= {"1", "2"}:
        parser.error(f"--modes takes {', '.join(MODES)} and --stages 1 and/or 2; got {args.modes}, {args.stages}")
    if args.golden is not None and not (args.golden / "official_eat_tiny_checkpoint.pt").is_file():
        return fail(f"{args.golden}: no official_eat_tiny_checkpoint.pt; pass the golden reference folder")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")] if device.type == "cuda" else [torch.float32]
    results: Dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if args.golden is not None:
        results["golden_max_abs_diff"] = golden_check(args.golden, device)
        print(json.dumps({"golden_max_abs_diff": results["golden_max_abs_diff"]}), flush=True)
    if args.teacher_accuracy:
        errors = teacher_target_errors(build(args.size, 1, device), args.batch, args.frames, device)
        results["teacher_target_rel_error"] = errors
        print(json.dumps({"teacher_target_rel_error": errors}), flush=True)
    results["cases"] = []
    interleave = device.type == "cpu" if args.interleave is None else args.interleave
    for stage in [int(x) for x in args.stages.split(",")]:
        for dtype in dtypes:
            cases = [Case(args.size, stage, dtype, mode, args, device) for mode in modes]
            by_mode = {}
            for result in run_cases(cases, args.steps, interleave, args.profile):
                by_mode[result["mode"]] = result
                results["cases"].append(result)
                print(json.dumps(result), flush=True)
                _write(args.json, results)
            plain = by_mode.get("plain")
            for mode in ("fast", "compiled"):
                other = by_mode.get(mode)
                if plain is None or other is None or "error" in plain or "error" in other:
                    continue
                summary = compare(plain, other)
                results["cases"].append(summary)
                print(json.dumps(summary), flush=True)
            _write(args.json, results)
    failed = [c for c in results["cases"] if "error" in c]
    return 1 if failed and len(failed) == len([c for c in results["cases"] if "mode" in c]) else 0


def _write(path: Optional[Path], results: Dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
