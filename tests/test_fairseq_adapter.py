"""The fairseq adapter as a boundary: installed only when asked, each replaced original pinned, and a
speed switch whose two sides give the same updates bit for bit on the CPU."""

from __future__ import annotations

import copy
import inspect
import subprocess
import sys

import pytest
import torch

from conftest import REPO

pytest.importorskip("fairseq")

from sslam_plugin.training import fairseq_adapter  # noqa: E402
from sslam_plugin.training.fairseq_adapter import SPEEDUPS, SPEEDUPS_ENV, install, original, pins  # noqa: E402
from sslam_plugin.training.fairseq_adapter.originals import TARGETS, owner_of  # noqa: E402


# ------------------------------------------------------------------ the pins
def test_every_replaced_original_is_pinned_and_unchanged():
    changed = pins.changed_sources()
    assert changed == [], "fairseq changed under the adapter:\n" + "\n".join(changed)
    pinned = {id(pins._resolve(target)) for target in pins.PINNED}
    unpinned = [key for key in TARGETS if id(inspect.unwrap(original(key))) not in pinned]
    assert unpinned == [], f"replaced without a pin in fairseq_adapter.pins: {unpinned}"


def test_a_changed_original_names_the_replacement_to_review(monkeypatch):
    target = "fairseq.optim.adam:Adam.step"
    _, review = pins.PINNED[target]
    monkeypatch.setitem(pins.PINNED, target, ("0" * 64, review))
    changed = pins.changed_sources()
    assert len(changed) == 1
    assert changed[0].startswith(f"{target} changed in the installed fairseq")
    assert "review sslam_plugin.training.fairseq_adapter.adam.foreach_step" in changed[0]


# ------------------------------------------------------------------ installed only when asked
def test_importing_the_plugin_changes_nothing_in_fairseq():
    probe = f"""
import importlib
targets = {TARGETS!r}
def current():
    out = {{}}
    for key, (module, path) in targets.items():
        owner = importlib.import_module(module)
        for part in path.split("."):
            owner = getattr(owner, part)
        out[key] = owner
    return out
before = current()
import sslam_plugin, sslam_plugin.training, sslam_plugin.training.launch  # registration, the callback's module
after = current()
print(sorted(k for k in targets if before[k] is not after[k]))
"""
    run = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_the_speed_switch_puts_fairseqs_own_code_back_and_keeps_the_fixes():
    try:
        install(speedups=False)
        for key in SPEEDUPS:
            owner, name = owner_of(key)
            assert getattr(owner, name) is original(key), key
        for key, fix in fairseq_adapter.FIXES.items():
            owner, name = owner_of(key)
            assert getattr(owner, name) is fix, key
        assert fairseq_adapter.installed_speedups() is False
        install(speedups=True)
        for key, speedup in SPEEDUPS.items():
            owner, name = owner_of(key)
            assert getattr(owner, name) is speedup, key
    finally:
        install()


@pytest.mark.parametrize("value, expected", [("1", True), ("0", False), ("off", False), ("", True), (None, True)])
def test_the_switch_is_read_from_the_environment(value, expected):
    environ = {} if value is None else {SPEEDUPS_ENV: value}
    assert fairseq_adapter.speedups_from_env(environ) is expected


def test_a_bad_switch_value_names_the_variable():
    with pytest.raises(ValueError, match=rf"{SPEEDUPS_ENV}='fast': use 1 .* or 0"):
        fairseq_adapter.speedups_from_env({SPEEDUPS_ENV: "fast"})


# ------------------------------------------------------------------ same updates either way
def _recipe_updates(speedups: bool, dtype: torch.dtype, updates: int = 4):
    """A few updates of a small model through the optimiser the recipe builds (composite Adam groups,
    fp16/bf16 master weights through fairseq's FP16Optimizer), from a fixed start."""
    from sslam_plugin.training.optimizer_path import build_optimizer, compose_recipe, optimizer_update

    install(speedups=speedups)
    overrides = ["task.data=/unused", f"common.fp16={dtype == torch.float16}", f"common.bf16={dtype == torch.bfloat16}",
                 "common.fp16_init_scale=4", "common.fp16_scale_window=2"]
    cfg = compose_recipe(REPO / "config" / "pretrain", "eat_stage1", overrides)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3)).to(dtype)
    model[1].bias.param_group = "no_weight_decay"  # the recipe's second Adam group
    optimizer = build_optimizer(cfg, list(model.parameters()), num_updates=20000)  # lr > 0 in the warm-up
    generator = torch.Generator().manual_seed(1)
    norms = []
    for step in range(updates):
        x = torch.randn(5, 6, generator=generator).to(dtype)
        loss = model(x).float().pow(2).sum() * (30.0 if step == 2 else 1.0)
        norms.append(optimizer_update(optimizer, loss, sample_size=5, clip_norm=cfg.optimization.clip_norm))
    masters = [p.detach().clone() for p in getattr(optimizer, "fp32_params", [])]
    return [p.detach().clone() for p in model.parameters()], masters, norms, copy.deepcopy(optimizer.state_dict())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_stock_fairseq_and_the_speed_replacements_give_the_same_updates(dtype):
    try:
        fast = _recipe_updates(True, dtype)
        stock = _recipe_updates(False, dtype)
    finally:
        install()
    weights_fast, masters_fast, norms_fast, state_fast = fast
    weights_stock, masters_stock, norms_stock, state_stock = stock
    start = _recipe_updates(True, dtype, updates=0)[0]
    install()
    assert not torch.equal(weights_fast[0], start[0])  # the updates moved the weights
    for a, b in zip(weights_fast + masters_fast + norms_fast, weights_stock + masters_stock + norms_stock):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert len(masters_fast) == (0 if dtype == torch.float32 else 6)
    assert state_fast.get("loss_scale") == state_stock.get("loss_scale")
