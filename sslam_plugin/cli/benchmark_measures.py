"""What ``sslam-benchmark pretraining`` computes from its timings: FLOPs per step, MFU, the teacher's
round-off under autocast, and the comparison of two modes."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from sslam_plugin.models import BootstrapPretrainer
from sslam_plugin.models.flops import StepShape
from sslam_plugin.models.source_retention import SourceRetentionPretrainer

__all__ = ["PEAK_TFLOPS", "peak_tflops", "model_flops_utilisation", "step_shape", "teacher_target_error", "teacher_target_errors",
           "compare"]

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


def teacher_target_errors(model: BootstrapPretrainer, clips: int, frames: int, device: torch.device) -> Dict[str, Any]:
    """:func:`teacher_target_error` on random clips for each low precision of ``device`` (bf16 only on the CPU)."""
    fbank = torch.randn(clips, 1, frames, 128, generator=torch.Generator().manual_seed(0)).to(device)
    low = [torch.float16, torch.bfloat16] if device.type == "cuda" else [torch.bfloat16]
    return {str(d).replace("torch.", ""): teacher_target_error(model, fbank, d) for d in low}


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
