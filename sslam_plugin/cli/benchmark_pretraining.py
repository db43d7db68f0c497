"""Benchmark pre-training steps on the CPU or a GPU, without fairseq: time, memory, MFU, fast vs plain.

For each stage (1: EAT, 2: SSLAM), precision (float32, float16, bfloat16 on
CUDA; float32 on the CPU) and mode, casts the student as fairseq's trainer does
(``model.half()`` / ``model.to(bfloat16)``, the teacher stays float32), runs
forward + backward + optimiser + EMA steps and reports the median step time,
peak GPU memory, model FLOPs utilisation and whether every loss and gradient is
finite. The modes run in the same process on the same batch and the same
initial weights, so the speed-up is a ratio from one run:

- ``plain``: the straightforward step (boolean-mask indexing, per-parameter
  EMA loop, ``torch.optim.Adam`` defaults, a finite check per gradient);
- ``fast``: ``PretrainingConfig.fast_step`` (index lists built once per step,
  one host sync, foreach EMA), fused Adam (foreach on the CPU) with the
  unscale and finite check in one multi-tensor kernel;
- ``compiled``: the fast step with ``compile_modules`` (torch.compile of the
  blocks and decoder, ``--compile-mode``); ``--compile`` adds it to ``--modes``.

The first-step losses of the modes are compared (``first_step_max_rel_diff``).
MFU = FLOPs counted from the shapes (:mod:`sslam_plugin.models.flops`) / step
time / the device's peak for the precision: ``--peak-tflops``, else a built-in
table of dense tensor-core peaks for known GPUs (none for the CPU).
``--profile DIR`` writes a torch.profiler breakdown of one step per case.
A case that fails (out of memory, a compiler error) is recorded with its error
and the others still run; ``--json`` is rewritten after every case, so a run
stopped part way keeps what it measured.

Usage:
    sslam-benchmark pretraining [--size base|small|tiny] [--batch 12] [--frames 1024]
        [--steps 5] [--modes plain,fast,compiled] [--dtypes float16,bfloat16]
        [--compile] [--compile-mode default|reduce-overhead|...]
        [--peak-tflops T] [--profile DIR] [--golden DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sslam_plugin.checkpoints.official_names import pretrainer_from_official
from sslam_plugin.masking import inverse_block_mask
from sslam_plugin.mixing import MixingConfig
from sslam_plugin.models import BootstrapPretrainer, DecoderConfig, EncoderConfig, PretrainingConfig
from sslam_plugin.models.flops import StepShape, step_flops
from sslam_plugin.models.pretraining import COMPILE_MODES
from sslam_plugin.models.source_retention import SourceRetentionPretrainer

logger = logging.getLogger(__name__)

SIZES = {
    "base": dict(encoder=dict(embed_dim=768, depth=12, num_heads=12), decoder=dict(dim=768, layers=6)),
    "small": dict(encoder=dict(embed_dim=192, depth=12, num_heads=3), decoder=dict(dim=192, layers=6)),
    "tiny": dict(encoder=dict(embed_dim=192, depth=2, num_heads=3), decoder=dict(dim=192, layers=2)),
}
MODES = ("plain", "fast", "compiled")

# Dense (no sparsity) peak TFLOP/s by precision; float32 without TF32, as torch's default for matmuls.
# Matched against torch.cuda.get_device_name() in order, first substring wins.
PEAK_TFLOPS: Tuple[Tuple[str, Dict[str, float]], ...] = (
    ("H200", {"float16": 989.4, "bfloat16": 989.4, "float32": 66.9}),
    ("H100 PCIe", {"float16": 756.0, "bfloat16": 756.0, "float32": 51.2}),
    ("H100", {"float16": 989.4, "bfloat16": 989.4, "float32": 66.9}),
    ("GH200", {"float16": 989.4, "bfloat16": 989.4, "float32": 66.9}),
    ("A100", {"float16": 312.0, "bfloat16": 312.0, "float32": 19.5}),
    ("L40S", {"float16": 362.1, "bfloat16": 362.1, "float32": 91.6}),
    ("A10", {"float16": 125.0, "bfloat16": 125.0, "float32": 31.2}),
    ("V100", {"float16": 125.0, "float32": 15.7}),
)


def peak_tflops(device_name: str, dtype: torch.dtype, override: Optional[float] = None) -> Optional[float]:
    """The peak to divide by: ``override``, else the table's entry for this device and precision, else None."""
    if override is not None:
        return override
    key = str(dtype).replace("torch.", "")
    for name, peaks in PEAK_TFLOPS:
        if name.lower() in device_name.lower():
            return peaks.get(key)
    return None


def model_flops_utilisation(flops: float, seconds: float, peak: Optional[float]) -> Optional[float]:
    """Achieved FLOP/s over the peak (TFLOP/s); None without a peak."""
    if peak is None or seconds <= 0:
        return None
    return flops / seconds / (peak * 1e12)


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


def step_shape(model: BootstrapPretrainer, clips: int, frames: int, mask: torch.Tensor) -> StepShape:
    """The sequences one step of ``model`` runs on ``clips`` clips of ``frames`` frames with ``mask``."""
    rows, cols = model.encoder.patch_grid(frames)
    patches = rows * cols
    kept = patches - int(mask[0].sum())
    copies = mask.shape[0] // clips
    if not isinstance(model, SourceRetentionPretrainer) or clips < 2:
        return StepShape(clips, copies, kept, patches, clips)
    mixing = model.mixing
    plan = model.plan(clips, frames, torch.Generator().manual_seed(0))
    mixed = int((~model.unmixed_patches(plan, frames, torch.device("cpu"))[0]).sum())
    student = 2 * clips if mixing.unmixed_student else clips
    teacher = 2 * clips if mixing.unmixed_student or mixing.source_retention else clips
    partner = clips if mixing.source_retention else 0
    return StepShape(student, copies, kept, patches, teacher, partner, mixed if partner else 0)


class _Harness:
    """The optimiser around the model, as fairseq's FP16 optimizer: fp32 master weights, a loss scale."""

    def __init__(self, model: BootstrapPretrainer, dtype: torch.dtype, fast: bool, device: torch.device):
        self.model, self.fast = model, fast
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        if fast:
            # one multi-tensor kernel for the whole update (fused on CUDA, foreach elsewhere)
            opts: Dict[str, Any] = {"fused": True} if device.type == "cuda" else {"foreach": True}
            self.opt = torch.optim.Adam(self.master, lr=1e-5, **opts)
        else:
            self.opt = torch.optim.Adam(self.master, lr=1e-5)
        # fairseq scales fp16 losses; here a fixed scale keeps fp16 gradients in range
        self.scale = 128.0 if dtype == torch.float16 else 1.0
        self.device = device

    def step(self, fbank: torch.Tensor, mask: torch.Tensor, update: int) -> Tuple[Any, bool]:
        out = self.forward(fbank, mask, update)
        self.backward(out)
        finite = self.update()
        self.model.ema_step(update)
        return out, finite

    def forward(self, fbank: torch.Tensor, mask: torch.Tensor, update: int) -> Any:
        # decoder noise from a generator of the update, not the global one, so the modes draw the same
        noise = torch.Generator(device=self.device).manual_seed(update)
        return self.model(fbank, mask, noise)

    def backward(self, out: Any) -> None:
        total = sum(out.losses.values()) / out.sample_size
        for p in self.params:
            p.grad = None
        (total * self.scale).backward()

    def update(self) -> bool:
        """Unscale, check, step the master weights and copy them back; False = skipped (overflow)."""
        finite = self._unscale_fast() if self.fast else self._unscale_plain()
        if finite:  # a loss-scaling optimizer skips a step whose gradients overflowed
            self.opt.step()
            with torch.no_grad():
                if self.fast:
                    torch._foreach_copy_(self.params, self.master)
                else:
                    for m, p in zip(self.master, self.params):
                        p.copy_(m)
        return finite

    def _unscale_plain(self) -> bool:
        finite = all(torch.isfinite(p.grad).all().item() for p in self.params if p.grad is not None)
        if finite:
            for m, p in zip(self.master, self.params):
                m.grad = None if p.grad is None else p.grad.float() / self.scale
        return finite

    def _unscale_fast(self) -> bool:
        pairs = [(m, p) for m, p in zip(self.master, self.params) if p.grad is not None]
        for m, p in pairs:
            m.grad = p.grad.float()  # no copy when already float32
        grads = [m.grad for m, _ in pairs]
        found_inf = torch.zeros(1, device=self.device)
        # unscale and finite check in one multi-tensor kernel; the step's one read of a device value
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, torch.full((1,), 1.0 / self.scale, device=self.device))
        return not bool(found_inf.item())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Case:
    """One stage, precision and mode: a model, its optimiser harness, a batch and its measurements."""

    def __init__(self, size: str, stage: int, dtype: torch.dtype, mode: str, args: argparse.Namespace, device: torch.device):
        self.size, self.stage, self.dtype, self.args, self.device = size, stage, dtype, args, device
        self.mode = mode
        self.compiled = mode == "compiled"
        self.fast = mode in ("fast", "compiled")
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
            self.harness = _Harness(self.model, dtype, self.fast, device)
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
        self.model = self.harness = None  # type: ignore[assignment]  # free its memory for the next case
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
            _release(case)
    if interleave:
        for case in cases:
            _release(case)
    return results


def _release(case: Case) -> None:
    """Drop a finished case's model and optimiser state so the next case's peak memory is its own."""
    case.model = case.harness = None  # type: ignore[assignment]
    if case.device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ profiling
_REGIONS = {
    # attribute path on the pretrainer -> region name
    "encoder.contextualize": "student encoder",
    "encoder.embed": "patch embedding",
    "decoder.forward": "decoder",
    "teacher_layers": "teacher",
    "partner_layers": "teacher (partner pass)",
    "patch_targets": "targets",
    "utterance_targets": "targets",
    "bootstrap_losses": "losses",
    "index_mask": "mask index",
    "mix": "mixing",
}


@contextlib.contextmanager
def _labelled(model: BootstrapPretrainer) -> Iterator[None]:
    """Wrap the step's parts in ``record_function`` ranges (instance attributes, removed after)."""
    patched: List[Tuple[Any, str]] = []
    for path, label in _REGIONS.items():
        owner_path, _, name = path.rpartition(".")
        owner = model
        for part in filter(None, owner_path.split(".")):
            owner = getattr(owner, part)
        if not hasattr(owner, name):
            continue
        original: Callable = getattr(owner, name)

        def wrapped(*a, _f=original, _label=label, **k):
            with torch.profiler.record_function(_label):
                return _f(*a, **k)

        setattr(owner, name, wrapped)
        patched.append((owner, name))
    try:
        yield
    finally:
        for owner, name in patched:
            delattr(owner, name)


def profile_step(
    harness: _Harness, fbank: torch.Tensor, mask: torch.Tensor, update: int, device: torch.device,
    out_dir: Path, case: Dict[str, Any],
) -> Dict[str, Dict[str, float]]:
    """Profile one step; per region, milliseconds of CPU time and of device kernels (CUDA).

    Writes the profiler's top-operator table to ``out_dir``.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    model = harness.model
    with _labelled(model), profile(activities=activities) as prof:
        with record_function("step"):
            with record_function("forward"):
                out = harness.forward(fbank, mask, update)
            with record_function("backward"):
                harness.backward(out)
            with record_function("optimizer"):
                harness.update()
            with record_function("ema"):
                model.ema_step(update)
        _sync(device)
    names = {"step", "forward", "backward", "optimizer", "ema"} | set(_REGIONS.values())
    regions: Dict[str, Dict[str, float]] = {}
    for event in prof.key_averages():
        if event.key in names:
            regions[event.key] = {
                "cpu_ms": round(event.cpu_time_total / 1000, 2),
                "device_ms": round(getattr(event, "device_time_total", 0.0) / 1000, 2),
                "calls": event.count,
            }
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"profile_stage{case['stage']}_{case['dtype']}_{case['mode']}.txt"
    (out_dir / name).write_text(prof.key_averages().table(sort_by=sort, row_limit=30))
    return regions


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


@torch.no_grad()
def teacher_target_error(model: BootstrapPretrainer, fbank: torch.Tensor, dtype: torch.dtype) -> Dict[str, float]:
    """How far the teacher's targets move when its forward runs under ``dtype`` autocast.

    Training runs the float32 teacher under autocast in the student's precision
    (``BootstrapPretrainer.teacher_layers``); this compares the patch and
    utterance targets of that pass with a float32 pass on the same clips, as
    ``||low - ref|| / ||ref||``.
    """
    ref_layers = model.teacher_layers(fbank.float())
    low_layers = model.teacher_layers(fbank.to(dtype))
    ref_patch, low_patch = model.patch_targets(ref_layers), model.patch_targets(low_layers)
    ref_utt = model.utterance_targets(ref_layers, ref_patch)
    low_utt = model.utterance_targets(low_layers, low_patch)

    def relative(low: torch.Tensor, ref: torch.Tensor) -> float:
        return float((low.float() - ref.float()).norm() / ref.float().norm())

    return {"patch": relative(low_patch, ref_patch), "utterance": relative(low_utt, ref_utt)}


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
    if not modes or not set(modes) <= set(MODES):
        parser.error(f"--modes takes {', '.join(MODES)}, got {args.modes}")
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
        model = build(args.size, 1, device)
        fbank = torch.randn(args.batch, 1, args.frames, 128, generator=torch.Generator().manual_seed(0)).to(device)
        low = [torch.float16, torch.bfloat16] if device.type == "cuda" else [torch.bfloat16]
        results["teacher_target_rel_error"] = {str(d).replace("torch.", ""): teacher_target_error(model, fbank, d)
                                               for d in low}
        print(json.dumps({"teacher_target_rel_error": results["teacher_target_rel_error"]}), flush=True)
        del model
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


def _paired_speedup(plain: List[float], fast: List[float]) -> Optional[float]:
    """Median over steps of plain / fast step time (meaningful when the modes took turns)."""
    if not plain or len(plain) != len(fast):
        return None
    return round(float(np.median([p / f for p, f in zip(plain, fast)])), 3)


def compare(plain: Dict[str, Any], fast: Dict[str, Any]) -> Dict[str, Any]:
    """Speed-up and first-step loss agreement of the two modes of one case."""
    diffs = [
        abs(fast["first_step_losses_per_patch"][k] - v) / max(abs(v), 1e-12)
        for k, v in plain["first_step_losses_per_patch"].items()
    ]
    return {
        "stage": plain["stage"],
        "dtype": plain["dtype"],
        "compare": f"{fast['mode']} vs plain",
        "speedup": round(plain["step_ms"] / fast["step_ms"], 3),
        "speedup_paired_median": _paired_speedup(plain["step_ms_all"], fast["step_ms_all"]),
        "first_step_max_rel_diff": max(diffs) if diffs else 0.0,
        "same_loss_names": sorted(plain["first_step_losses_per_patch"]) == sorted(fast["first_step_losses_per_patch"]),
    }


if __name__ == "__main__":
    raise SystemExit(main())
