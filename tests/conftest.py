"""Shared fixtures: the reference material beside the clone, and small model configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("SSLAM_REFERENCE", REPO.parent / "shared" / "reference"))
GOLDEN = REFERENCE / "golden"
GOLDEN_STAGE2 = REFERENCE / "golden_stage2"


def require_reference(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference material not found at {path} (set SSLAM_REFERENCE to the shared/reference folder)")
    return path


@pytest.fixture
def golden_dir() -> Path:
    return require_reference(GOLDEN)


@pytest.fixture
def golden_stage2_dir() -> Path:
    return require_reference(GOLDEN_STAGE2)


def tiny_config(**overrides):
    """A small pre-training config (2 blocks, width 32) for fast CPU tests."""
    from sslam_plugin.models import DecoderConfig, EncoderConfig, PretrainingConfig

    enc = dict(embed_dim=32, depth=2, num_heads=2)
    enc.update(overrides.pop("encoder", {}))
    dec = dict(dim=32, layers=2, groups=4)
    dec.update(overrides.pop("decoder", {}))
    cfg = dict(clone_batch=2, average_top_k_layers=2)
    cfg.update(overrides)
    return PretrainingConfig(encoder=EncoderConfig(**enc), decoder=DecoderConfig(**dec), **cfg)


def golden_config():
    """The architecture of golden/official_eat_tiny_checkpoint.pt."""
    from sslam_plugin.models import DecoderConfig, EncoderConfig, PretrainingConfig

    return PretrainingConfig(
        encoder=EncoderConfig(embed_dim=192, depth=2, num_heads=3),
        decoder=DecoderConfig(dim=192, layers=2),
        clone_batch=2,
        average_top_k_layers=2,
    )


def venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run(cmd, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def hydra_train_command(config_dir: str, config_name: str, overrides) -> list:
    """``fairseq-hydra-train --config-dir config/CONFIG_DIR --config-name CONFIG_NAME OVERRIDES``."""
    return [
        venv_bin("fairseq-hydra-train"),
        "--config-dir", str(REPO / "config" / config_dir),
        "--config-name", config_name,
        *overrides,
    ]


def hydra_train(config_dir: str, config_name: str, overrides, cwd, env=None) -> subprocess.CompletedProcess:
    """Run ``fairseq-hydra-train`` in ``cwd`` to the end (see :func:`hydra_train_command`)."""
    return run(hydra_train_command(config_dir, config_name, overrides), cwd=cwd, env=env)


def logged(log: str, key: str) -> dict:
    """{num_updates: value} of a key in the per-update ``train_inner`` lines of a training log."""
    import re

    values = {}
    for line in log.splitlines():
        if "train_inner" in line:
            update = int(re.search(r"num_updates=(\d+)", line).group(1))
            values[update] = float(re.search(rf"{key}=([-\d.e]+)", line).group(1))
    return values


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A small copy of the demo corpus (scale 0.1: 48 training clips) under ``ROOT/data``."""
    root = tmp_path_factory.mktemp("demo")
    result = run([sys.executable, str(REPO / "scripts" / "make_demo_data.py"), str(root / "data"), "--scale", "0.1"])
    assert result.returncode == 0, result.stderr
    return root


# --- two speeds: `make test-fast` runs `pytest -m "not slow"` -------------------------------------
# Measured (pytest --durations, 2 shared cores): whole files whose tests train through
# fairseq-hydra-train, start several processes or commands, build demo corpora, compose every paper
# recipe or look at the installed copy, and single tests of that kind in otherwise fast files.
# A listed name that no longer exists is an error, so the lists cannot go stale silently.
SLOW_FILES = frozenset({
    "test_ablation.py", "test_demo_linear_eval.py", "test_distributed_training.py",
    "test_fairseq_training.py", "test_finetune_trajectory.py", "test_gpu_scripts.py", "test_hear.py",
    "test_paper_recipes.py", "test_plot_mixture.py", "test_relaunch_changes.py", "test_robust_training.py",
    "test_run_ownership.py", "test_stage2_variants.py", "test_training_curves.py", "test_watchdog.py",
    "test_long_extraction.py", "test_readable_logs.py",
})
SLOW_TESTS = frozenset({
    "test_bad_checkpoints.py::test_a_bad_continue_once_stops_the_launch_with_one_line",
    "test_pack_command.py::test_packed_shards_train_and_resume_exactly",
    "test_benchmark_scale.py::test_tiny_run_measures_every_size_and_storage",
    "test_benchmark_pretraining.py::test_benchmark_records_a_failed_case_and_runs_the_others",
    "test_benchmark_pretraining.py::test_benchmark_runs_both_modes_on_the_cpu",
    "test_benchmark_pretraining.py::test_compiled_modules_give_the_eager_losses_and_gradients",
    "test_classification.py::test_demo_finetuning_improves_validation_map",
    "test_classification.py::test_roll_aug_rolls_and_scales_the_waveform_before_the_fbank",
    "test_classification.py::test_roll_fbank_shifts_training_clips_in_time_reproducibly",
    "test_compute_norm_stats.py::test_installed_command_fails_with_one_line",
    "test_config_dir_options.py::test_every_value_a_recipe_sets_is_shown_as_the_recipe_sets_it",
    "test_config_dir_options.py::test_the_recipe_wins_over_the_code_default_and_null_is_spelled_for_hydra",
    "test_data_workers.py::test_a_tuned_worker_serves_clip_sized_buffers_from_its_heap",
    "test_evaluation.py::test_evaluate_checkpoint_scores_every_clip_and_writes_the_report",
    "test_export.py::test_convert_cli_writes_export",
    "test_export.py::test_golden_converts_loads_and_reproduces_features_without_fairseq",
    "test_extract_features.py::test_manifest_input_and_cli",
    "test_fairseq_adapter.py::test_importing_the_plugin_changes_nothing_in_fairseq",
    "test_fairseq_compat.py::test_broadcast_gather_ddp_and_stop_agreement_on_gloo",
    "test_hf_official_layouts.py::test_convert_cli_to_hf_and_back",
    "test_infer.py::test_cli_top_k_sigmoid",
    "test_infer.py::test_softmax_and_text_output",
    "test_launch.py::test_local_cpu_processes_meet_over_gloo",
    "test_launch.py::test_torchrun_variables_give_rank_world_and_device",
    "test_launch_options.py::test_fairseq_hydra_train_refuses_a_bad_effective_batch_before_any_process_starts",
    "test_length_filter.py::test_validate_manifest_warns_before_a_run",
    "test_packaging.py::test_an_installed_recipe_composes_from_another_folder",
    "test_packaging.py::test_every_command_is_installed_and_points_at_a_main_function",
    "test_packaging.py::test_every_declared_command_answers_help",
    "test_packaging.py::test_the_recipes_ship_inside_the_package_and_match_the_checkout",
    "test_polyphony.py::test_demo_polyphonic_clips_come_from_the_builder",
    "test_recipes.py::test_every_listed_option_takes_a_new_value_on_the_command_line",
    "test_run_lock.py::test_a_forked_child_does_not_keep_the_lock_after_its_parent_dies",
    "test_run_lock.py::test_kill_9_of_the_holding_process_frees_the_folder",
    "test_scan.py::test_cli",
    "test_scan.py::test_output_is_deterministic_for_a_seed_and_any_job_count",
    "test_sed_training.py::test_checkpoint_is_scored_and_detects",
    "test_sed_training.py::test_training_logs_both_losses_and_validates_frame_f1",
    "test_shipped_manifests.py::test_demo_manifests_are_what_make_demo_data_writes",
    "test_stop_statuses.py::test_a_rank_that_refused_ends_the_job_with_its_status",
    "test_stop_statuses.py::test_a_second_ctrl_c_after_the_stops_save_ends_the_launcher_with_75",
    "test_submit_slurm.py::test_a_failed_local_job_is_reported_by_its_error_line_and_log",
    "test_submit_slurm.py::test_sbatch_script_carries_run_config_and_passthrough_settings",
    "test_submit_slurm.py::test_the_requeue_waits_for_a_checkpoint_and_the_requeued_job_resumes",
    "test_train_command.py::test_a_stop_signal_while_fairseq_is_still_importing_ends_resumable_with_a_log_line",
    "test_train_command.py::test_the_command_trains_as_fairseq_hydra_train_does",
    "test_training_state.py::test_an_epochs_workers_and_prefetch_thread_end_before_the_next_epoch",
    "test_training_state.py::test_each_rank_draws_its_own_masks_and_mixing_and_draws_them_again_after_a_resume",
    "test_validate_manifest.py::test_decode_finds_nan",
})


def pytest_collection_modifyitems(config, items):
    tests_dir = Path(__file__).resolve().parent
    stale = sorted(name for name in SLOW_FILES | {t.split("::")[0] for t in SLOW_TESTS}
                   if not (tests_dir / name).is_file())
    modules = {}
    for item in items:
        modules[item.path.name] = getattr(item, "module", None)
        test = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        if item.path.name in SLOW_FILES or test in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
    for test in sorted(SLOW_TESTS):  # (checked on the module: -k or a node id may leave the test out)
        file, name = test.split("::")
        if modules.get(file) is not None and not hasattr(modules[file], name):
            stale.append(test)
    if stale:
        raise pytest.UsageError(
            f"tests/conftest.py lists slow tests that do not exist: {stale}; update SLOW_FILES/SLOW_TESTS")
