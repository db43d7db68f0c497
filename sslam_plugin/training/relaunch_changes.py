"""A relaunch that would continue a checkpoint as another experiment: the settings compared, and the check.

The launcher compares this launch's config with the config saved in the
checkpoint it resumes (:func:`check_config_changes`, once the effective batch
is known): a difference in a setting that makes another experiment (data,
model shape, seed, lr schedule, effective batch...) is refused with each key
and its two values, unless ``task.accept_config_changes=true``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

from omegaconf import DictConfig

from .checkpoint_summary import CLASSIFIER_MODEL_NAME, CheckpointSummary
from .config_keys import leaves, lookup, plain, select
from .launch_refusals import ChangedConfigError

__all__ = [
    "config_changes", "check_config_changes", "effective_batch", "ConfigChange", "ChangedConfigError",
    "ACCEPT_CHANGES_KEY", "COMPARED_SECTIONS", "COMPARED_KEYS", "RELAUNCH_FREE_KEYS", "NOT_SET",
]

logger = logging.getLogger(__name__)

# What a relaunch compares with the checkpoint it resumes (check_config_changes): whole
# sections, so that a setting added later is compared without being listed here ...
COMPARED_SECTIONS = ("task", "model", "criterion", "optimizer", "lr_scheduler")
COMPARED_KEYS = ("common.seed", "optimization.lr", "optimization.clip_norm")
# ... less what may change between two launches of one experiment: robustness and
# bookkeeping of the data loading, paths the launcher fills in, speed-only switches, what
# is logged, and settings compared another way (the effective batch; model_path by
# check_same_run). Outside the compared sections, everything may change: process count,
# num_workers, batch_size per process (the effective batch is compared), precision
# (fp16/bf16/fp32: the hardware's choice), log, checkpoint.* save intervals, max_epoch.
RELAUNCH_FREE_KEYS = frozenset({
    "task.failed_clips_dir",
    "task.preflight_clips",
    "task.max_failed_fraction",
    "task.max_substitutions",
    "task.effective_batch_size",
    "task.accept_config_changes",
    "model.model_path",
    "model.trust_checkpoint",
    "model.fast_step",
    "model.compile_modules",
    "model.compile_mode",
    "criterion.log_keys",
})
# fairseq lr schedulers whose curve follows optimization.max_update unless given their own length
MAX_UPDATE_SCHEDULERS = {"cosine": "max_update", "polynomial_decay": "total_num_update", "tri_stage": "max_update"}
ACCEPT_CHANGES_KEY = "task.accept_config_changes"
EFFECTIVE_BATCH = "effective batch"


@dataclass(frozen=True)
class ConfigChange:
    key: str
    saved: Any  # the checkpoint's value (NOT_SET when it has none)
    current: Any

    def __str__(self) -> str:
        return f"{self.key}: checkpoint: {_show(self.saved)}, now: {_show(self.current)}"


NOT_SET = "(not set)"


def _show(value: Any) -> str:
    return value if value == NOT_SET else repr(value)


def _schedule_length_keys(cfg: Mapping[str, Any]) -> List[str]:
    """``optimization.max_update`` when an lr schedule in use takes its length from it."""
    schedulers = [select(cfg, "lr_scheduler")]
    groups = select(cfg, "optimizer.groups")
    if isinstance(groups, Mapping):
        schedulers += [g.get("lr_scheduler") for g in groups.values() if isinstance(g, Mapping)]
    for scheduler in schedulers:
        if isinstance(scheduler, Mapping):
            own_length = MAX_UPDATE_SCHEDULERS.get(str(scheduler.get("_name")))
            if own_length and (scheduler.get(own_length) or 0) <= 0:
                return ["optimization.max_update"]
    return []


def effective_batch(cfg: Any, world_size: Optional[int] = None) -> Optional[Tuple[int, str]]:
    """Clips per update and how they come about, from a config after the launcher's choices.

    ``world_size``: the processes of this launch, where the config does not hold them yet.
    """
    batch = select(cfg, "dataset.batch_size")
    freq = select(cfg, "optimization.update_freq")
    world = world_size or select(cfg, "distributed_training.distributed_world_size")
    if not batch or not freq or not world:
        return None
    freq = int(list(freq)[0])
    return int(batch) * freq * int(world), f"{batch} per process x update_freq {freq} x {world} processes"


def config_changes(
    saved: Optional[Mapping[str, Any]], current: Any, world_size: Optional[int] = None
) -> List[ConfigChange]:
    """The settings that differ between a checkpoint's config and this launch's.

    Compared: every key of :data:`COMPARED_SECTIONS` (less :data:`RELAUNCH_FREE_KEYS`),
    :data:`COMPARED_KEYS`, ``optimization.max_update`` where the lr schedule follows
    it, and the effective batch (clips per update over all processes). A key the
    checkpoint does not hold is compared as ``(not set)`` unless this launch leaves
    it empty (None, false, 0: a setting added by a later version at its default).

    Args:
        saved: the checkpoint's ``cfg`` (plain dicts).
        current: this launch's config, after the launcher set ``update_freq``.
        world_size: this launch's processes (default: the config's ``distributed_world_size``).
    """
    if saved is None:
        return []
    current = plain(current)
    keys = list(COMPARED_KEYS) + _schedule_length_keys(saved) + _schedule_length_keys(current)
    for section in COMPARED_SECTIONS:
        for tree in (saved, current):
            keys += [key for key, _ in leaves(tree.get(section), section) if tree.get(section) is not None]
    free = set(RELAUNCH_FREE_KEYS)
    if lookup(current, "model._name")[1] == CLASSIFIER_MODEL_NAME:
        # the classifier's encoder is model.model_path's, written into the run's config when the
        # model is built (so it differs from the recipe's by design); its shape is checked when
        # the checkpoint's weights load, and its dropouts are always the fine-tuning ones
        free.add("model.encoder")
    changes: List[ConfigChange] = []
    for key in dict.fromkeys(keys):
        if key in free or any(key.startswith(prefix + ".") for prefix in free):
            continue
        had, old = lookup(saved, key)
        has, new = lookup(current, key)
        if not had and not new:
            continue
        if (old if had else NOT_SET) != (new if has else NOT_SET):
            changes.append(ConfigChange(key, old if had else NOT_SET, new if has else NOT_SET))
    old_batch, new_batch = effective_batch(saved), effective_batch(current, world_size)
    if old_batch and new_batch and old_batch[0] != new_batch[0]:
        changes.append(ConfigChange(
            f"{EFFECTIVE_BATCH} (clips per update)", f"{old_batch[0]} ({old_batch[1]})", f"{new_batch[0]} ({new_batch[1]})"
        ))
    return changes


def check_config_changes(
    cfg: DictConfig, resumed: Optional[CheckpointSummary], world_size: Optional[int] = None
) -> List[ConfigChange]:
    """Refuse a relaunch that would continue the checkpoint as another experiment.

    Only a resume of the run's own checkpoint is compared: a first launch (from
    scratch or from ``checkpoint.continue_once``) and an explicit
    ``checkpoint.restore_file`` start something new. With
    ``task.accept_config_changes=true`` the changes are logged and accepted.

    Raises:
        ChangedConfigError: one message naming each changed key with both values, and the override.
    """
    if resumed is None:
        return []
    if resumed.cfg is None:
        logger.warning("%s holds no readable config: this relaunch's settings cannot be compared with it", resumed.path)
        return []
    changes = config_changes(resumed.cfg, cfg, world_size)
    if not changes:
        return []
    listed = "; ".join(str(change) for change in changes)
    if select(cfg, ACCEPT_CHANGES_KEY):
        logger.warning(
            "%s=true: continuing %s (update %d) with %d changed setting(s): %s",
            ACCEPT_CHANGES_KEY, resumed.path, resumed.num_updates, len(changes), listed,
        )
        return changes
    raise ChangedConfigError(
        f"{resumed.path} (update {resumed.num_updates}) was trained with other settings; resuming it with these "
        f"would make another experiment: {listed}. Relaunch with the checkpoint's values, start a new run "
        f"(hydra.run.dir=...), or add {ACCEPT_CHANGES_KEY}=true to continue this run with the changes"
    )
