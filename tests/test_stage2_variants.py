"""The paper's Table 3 stage-2 variants as recipes: each trains from one stage-1 checkpoint
through fairseq-hydra-train and logs exactly its own loss terms."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import hydra_train, logged

pytest.importorskip("fairseq")

TINY_MODEL = [
    "model.encoder.embed_dim=64", "model.encoder.depth=2", "model.encoder.num_heads=2",
    "model.decoder.dim=64", "model.decoder.layers=2", "model.decoder.groups=4",
    "model.clone_batch=2", "model.average_top_k_layers=2",
]
# the paper recipes at CPU-test size: float32, one process, no accumulation, readable logs
TINY_RUN = [
    "task.data=data/manifests", "task.target_length=128", "task.effective_batch_size=null",
    "dataset.batch_size=4", "dataset.num_workers=0", "common.fp16=false", "common.log_format=simple",
    "common.log_interval=1", "checkpoint.save_interval_updates=0", "distributed_training.distributed_world_size=1",
    "optimizer.groups.default.lr_scheduler.warmup_updates=1",
]
UPDATES = 3
ALL = ("loss_patch", "loss_utterance", "loss_patch_mixed", "loss_utterance_mixed", "loss_source_retention")
VARIANTS = {  # recipe -> the loss terms its log must show (the others must be absent)
    "stage2_mb_ua": ("loss_patch", "loss_utterance"),
    "stage2_mb_pma": ("loss_patch_mixed", "loss_utterance_mixed"),
    "stage2_mb_ua_pma": ("loss_patch", "loss_utterance", "loss_patch_mixed", "loss_utterance_mixed"),
    "sslam_stage2": ALL,
}


def run_ok(config: str, overrides, cwd: Path) -> str:
    result = hydra_train("pretrain", config, overrides, cwd)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def train_lines(log: str) -> list:
    return [line for line in log.splitlines() if "train_inner" in line]


@pytest.fixture(scope="module")
def stage1(demo_data) -> Path:
    """One small stage-1 checkpoint that every variant starts from."""
    run_dir = demo_data / "variants_stage1"
    run_ok("demo_stage1", [f"hydra.run.dir={run_dir}", "optimization.max_update=2", *TINY_RUN, *TINY_MODEL], demo_data)
    return run_dir / "checkpoints" / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def variant_logs(demo_data, stage1) -> dict:
    logs = {}
    for name in VARIANTS:
        overrides = [f"hydra.run.dir={demo_data / name}", f"optimization.max_update={UPDATES}",
                     f"checkpoint.continue_once={stage1}", "model.mixing.unmixed_window_frames=32",
                     *TINY_RUN, *TINY_MODEL]
        logs[name] = run_ok(name, overrides, demo_data)
    return logs


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_trains_with_its_own_loss_terms(variant_logs, stage1, name):
    log = variant_logs[name]
    assert f"Loaded checkpoint {stage1}" in log
    lines = train_lines(log)
    assert len(lines) == UPDATES
    for key in ALL:
        present = [re.search(rf"\b{key}=", line) is not None for line in lines]
        assert all(present) if key in VARIANTS[name] else not any(present), (name, key, lines[0])
    # the logged (weighted) terms are the whole loss; the utterance terms are logged per clip
    totals, clips = logged(log, "loss"), logged(log, "bsz")
    terms = {key: logged(log, key) for key in VARIANTS[name]}
    for update, total in totals.items():
        whole = sum(t[update] * (clips[update] if "utterance" in key else 1) for key, t in terms.items())
        assert total == pytest.approx(whole, rel=1e-4, abs=2e-3), (name, update)
    assert all(v > 0 for t in terms.values() for v in t.values())


def test_variants_cost_and_weights(variant_logs):
    """MB-PMA's student sees the mixtures only (half of SSLAM's masked patches, as MB-UA's);
    the mixed variants log the fraction mixed, MB-UA mixes nothing."""
    size = {name: logged(log, "sample_size") for name, log in variant_logs.items()}
    for update in range(1, UPDATES + 1):
        assert size["stage2_mb_pma"][update] * 2 == size["sslam_stage2"][update] == size["stage2_mb_ua_pma"][update]
        assert size["stage2_mb_ua"][update] == size["stage2_mb_pma"][update]
    for name in ("stage2_mb_pma", "stage2_mb_ua_pma", "sslam_stage2"):
        assert all(0 < v < 1 for v in logged(variant_logs[name], "mixed_fraction").values())
    assert "mixed_fraction=" not in "".join(train_lines(variant_logs["stage2_mb_ua"]))
