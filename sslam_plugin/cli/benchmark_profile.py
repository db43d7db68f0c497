"""A torch.profiler breakdown of one benchmarked pre-training step by region (``sslam-benchmark pretraining --profile``)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import torch

from sslam_plugin.models import BootstrapPretrainer

__all__ = ["profile_step"]

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
    harness: Any, fbank: torch.Tensor, mask: torch.Tensor, update: int, device: torch.device,
    out_dir: Path, case: Dict[str, Any],
) -> Dict[str, Dict[str, float]]:
    """Profile one step; per region, milliseconds of CPU time and of device kernels (CUDA).

    ``harness``: the benchmark's training step (``forward``, ``backward``, ``update``, ``model``). Writes the profiler's top-operator table to ``out_dir``.
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
        if device.type == "cuda":
            torch.cuda.synchronize()
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
