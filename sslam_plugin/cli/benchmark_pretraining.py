"""Benchmark and sanity-check pre-training steps on the CPU or a GPU, without fairseq.

For each precision (float32, float16, bfloat16 on CUDA; float32 on the CPU) and
stage (1: EAT, 2: SSLAM), casts the student as fairseq's trainer does
(``model.half()`` / ``model.to(bfloat16)``), runs forward + backward + an EMA
step, and reports the step time, peak GPU memory, and checks that every loss is
finite, the teacher stayed float32, and (with --golden) that the encoder
reproduces the official golden features on this device.

Usage:
    sslam-benchmark pretraining [--size base|tiny] [--batch 12] [--frames 1024]
        [--steps 5] [--golden DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from sslam_plugin.checkpoints.official_names import pretrainer_from_official
from sslam_plugin.masking import inverse_block_mask
from sslam_plugin.mixing import MixingConfig
from sslam_plugin.models import BootstrapPretrainer, DecoderConfig, EncoderConfig, PretrainingConfig
from sslam_plugin.models.source_retention import SourceRetentionPretrainer

SIZES = {
    "base": dict(encoder=dict(embed_dim=768, depth=12, num_heads=12), decoder=dict(dim=768, layers=6)),
    "tiny": dict(encoder=dict(embed_dim=192, depth=2, num_heads=3), decoder=dict(dim=192, layers=2)),
}


def build(size: str, stage: int, device: torch.device) -> BootstrapPretrainer:
    spec = SIZES[size]
    cfg = PretrainingConfig(
        encoder=EncoderConfig(**spec["encoder"]),
        decoder=DecoderConfig(**spec["decoder"]),
        clone_batch=16 if stage == 1 else 8,
        average_top_k_layers=spec["encoder"]["depth"],
        utterance_target_layers=None if stage == 1 else 1,
    )
    model = BootstrapPretrainer(cfg) if stage == 1 else SourceRetentionPretrainer(cfg, MixingConfig(enabled=True))
    return model.to(device)


def batch(clips: int, frames: int, clones: int, device: torch.device, dtype: torch.dtype):
    fbank = torch.randn(clips, 1, frames, 128, device=device).to(dtype)
    grid = (frames // 16, 8)
    mask = np.concatenate([inverse_block_mask(grid, clones, rng=np.random.default_rng(i)) for i in range(clips)])
    return fbank, torch.from_numpy(mask).to(device)


def run_case(size: str, stage: int, dtype: torch.dtype, args, device: torch.device) -> Dict[str, object]:
    torch.manual_seed(0)
    model = build(size, stage, device).to(dtype)  # as fairseq's --fp16 / --bf16: the teacher must stay float32
    model.train()
    # fp32 master weights with a loss scale, as fairseq's FP16 optimizer keeps them
    params = [p for p in model.parameters() if p.requires_grad]
    master = [p.detach().float().clone().requires_grad_(True) for p in params]
    opt = torch.optim.Adam(master, lr=1e-5)
    fbank, mask = batch(args.batch, args.frames, model.cfg.clone_batch, device, dtype)
    times: List[float] = []
    finite, grads_finite = True, True
    losses = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(fbank, mask)
        # fairseq scales fp16 losses; here a fixed scale keeps fp16 gradients in range
        total = sum(out.losses.values()) / out.sample_size
        scale = 128.0 if dtype == torch.float16 else 1.0
        for p in params:
            p.grad = None
        (total * scale).backward()
        step_finite = all(torch.isfinite(p.grad).all().item() for p in params if p.grad is not None)
        grads_finite &= step_finite
        if step_finite:  # a loss-scaling optimizer skips a step whose gradients overflowed
            for m, p in zip(master, params):
                m.grad = None if p.grad is None else p.grad.float() / scale
            opt.step()
            with torch.no_grad():
                for m, p in zip(master, params):
                    p.copy_(m)
        model.ema_step(step + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step > 0:  # the first step warms up kernels
            times.append(time.perf_counter() - start)
        finite &= all(torch.isfinite(v).item() for v in out.losses.values())
        if step == 0:
            first_finite = bool(finite)
        losses = {k: float(v.detach()) / float(out.sample_size) for k, v in out.losses.items()}
    return {
        "size": size,
        "stage": stage,
        "dtype": str(dtype).replace("torch.", ""),
        "clips": args.batch,
        "frames": args.frames,
        "step_ms": round(1000 * float(np.median(times)), 1),
        "clips_per_s": round(args.batch / float(np.median(times)), 1),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
        "first_step_losses_finite": first_finite,
        "losses_finite": bool(finite),
        "grads_finite": bool(grads_finite),
        "teacher_float32": all(p.dtype == torch.float32 for p in model.teacher.parameters()),
        "losses_per_patch": {k: round(v, 4) for k, v in losses.items()},
    }


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


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--golden", type=Path, default=None, help="folder of the golden reference (optional)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--dtypes", default="float32,float16,bfloat16", help="CUDA precisions to run")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")] if device.type == "cuda" else [torch.float32]
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__}
    if args.golden is not None:
        results["golden_max_abs_diff"] = golden_check(args.golden, device)
        print(json.dumps({"golden_max_abs_diff": results["golden_max_abs_diff"]}), flush=True)
    results["cases"] = []
    for stage in (1, 2):
        for dtype in dtypes:
            case = run_case(args.size, stage, dtype, args, device)
            results["cases"].append(case)
            print(json.dumps(case), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
