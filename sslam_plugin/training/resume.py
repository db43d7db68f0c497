"""Which checkpoint a launch starts from: the run's own, an intact older one, or none.

Applied by the launcher to the whole config before any process starts, while
it holds the run folder's lock (:mod:`.run_lock`), so that no other launch
writes a checkpoint between this choice and the ranks' loading it
(:func:`choose_checkpoint`):

* ``checkpoint_last.pt`` in the run's checkpoint folder: resume from it, after
  checking that it belongs to the same run (same task and model, same initial
  weights); the log names the file and its update.
* a damaged ``checkpoint_last.pt`` (a kill while fairseq copied it): resume from
  the newest intact checkpoint of the folder, with a warning naming both; stop
  with a clear message when there is none.
* a ``checkpoint_last.pt`` already at ``optimization.max_update``: nothing to
  train; the launch says so and ends (fairseq would train one more update
  before checking, and overwrite a finished run's checkpoint).
* a relaunch whose settings make it another experiment (data, model shape,
  seed, lr schedule, effective batch...: :func:`config_changes`) is refused
  with the list of changed keys, unless ``task.accept_config_changes=true``
  (:func:`check_config_changes`, called by the launcher once the effective
  batch is known).
* a checkpoint file that is empty, truncated, not a checkpoint, a fine-tuned
  classifier given to continue pre-training, or an official checkpoint in the
  run folder: one line naming the file and what it is (never torch's advice to
  unpickle it). A ``checkpoint.continue_once`` moved or copied elsewhere is the
  same starting point when its contents are (SHA-256, recorded at the first launch).
* too little free space for the next checkpoint: refused before training;
  ``*.pt.tmp`` left by an interrupted save are removed.
* none: start from ``checkpoint.continue_once`` (stage 2 from stage 1, with a
  fresh optimiser, schedule, meters and data position) or from scratch.

fairseq would apply ``checkpoint.reset_*`` to the continued checkpoint and to
every later resume alike; here they apply to the first launch only.
"""

from __future__ import annotations

import glob
import logging
import os
import errno
import pickle
import shutil
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from omegaconf import DictConfig

__all__ = [
    "CheckpointSummary",
    "DamagedCheckpointError",
    "read_checkpoint_summary",
    "choose_checkpoint",
    "already_finished",
    "config_changes",
    "check_config_changes",
    "ConfigChange",
    "ChangedConfigError",
    "ACCEPT_CHANGES_KEY",
    "resolve_launch_path",
    "resolve_model_path",
]

logger = logging.getLogger(__name__)

DEFAULT_RESTORE_FILE = "checkpoint_last.pt"
RESET_FLAGS = ("reset_optimizer", "reset_lr_scheduler", "reset_meters", "reset_dataloader")
# Settings that make two launches the same run; a resume with other values is refused.
SAME_RUN_KEYS = ("task._name", "model._name", "model.model_path", "model.mixing.enabled", "checkpoint.continue_once")


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
CLASSIFIER_MODEL_NAME = "sslam_classifier"
# fairseq lr schedulers whose curve follows optimization.max_update unless given their own length
MAX_UPDATE_SCHEDULERS = {"cosine": "max_update", "polynomial_decay": "total_num_update", "tri_stage": "max_update"}
ACCEPT_CHANGES_KEY = "task.accept_config_changes"
EFFECTIVE_BATCH = "effective batch"


class ChangedConfigError(ValueError):
    """A relaunch with settings that make it another experiment; the message lists each change."""


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


class DamagedCheckpointError(RuntimeError):
    """A checkpoint file that cannot be read; the message names it and the reason."""


class WrongCheckpointError(ValueError):
    """A readable checkpoint of the wrong kind for this launch (a fine-tuned one to continue pre-training)."""


class AnotherRunError(ValueError):
    """``checkpoint_last.pt`` of another run (other task, model or starting point)."""


class DataloaderMismatchError(RuntimeError):
    """The checkpoint's position in the epoch does not fit the data any more (the manifest changed)."""


class DiskFullError(OSError):
    """No room for the next checkpoint in the checkpoint folder."""


# Refusals the launcher reports as one line (no traceback).
LAUNCH_REFUSALS = (ChangedConfigError, DamagedCheckpointError, WrongCheckpointError, AnotherRunError,
                   DataloaderMismatchError, DiskFullError)
PARTIAL_SAVE_SUFFIX = ".tmp"  # fairseq writes checkpoint_*.pt.tmp, then renames it


def remove_partial_saves(save_dir: str) -> List[str]:
    """Delete fairseq's leftover ``*.pt.tmp`` files: saves that a full disk or a kill interrupted.

    Safe under the run lock: no other launch saves into the folder meanwhile.
    """
    removed = sorted(glob.glob(os.path.join(glob.escape(save_dir), f"*.pt{PARTIAL_SAVE_SUFFIX}")))
    for path in removed:
        os.remove(path)
        logger.warning("removed %s, left by an interrupted checkpoint save", path)
    return removed


def check_free_space(save_dir: str, resumed: Optional[CheckpointSummary]) -> None:
    """Refuse to train when the checkpoint folder has no room for the next save.

    fairseq writes a whole new checkpoint before it replaces the old one, so it
    needs the size of the checkpoint being resumed free; a first launch has no
    size to go by and is not checked.
    """
    if resumed is None or not os.path.isdir(save_dir):
        return
    needed, free = os.path.getsize(resumed.path), shutil.disk_usage(save_dir).free
    if free < needed:
        raise DiskFullError(
            errno.ENOSPC,
            f"{save_dir}: {free / 2**20:.0f} MiB free, but the next checkpoint needs about {needed / 2**20:.0f} MiB "
            f"(the size of {os.path.basename(resumed.path)}): free some space, then launch again to resume "
            f"from update {resumed.num_updates}",
        )


def disk_full(err: BaseException, cfg: Any) -> Optional[DiskFullError]:
    """A full disk met while training (a failed save) as one line; None for any other error."""
    if not isinstance(err, OSError) or err.errno != errno.ENOSPC or isinstance(err, DiskFullError):
        return None
    save_dir = str(_select(cfg, "checkpoint.save_dir") or ".")
    remove_partial_saves(save_dir)
    return DiskFullError(
        errno.ENOSPC,
        f"no space left on the device of {getattr(err, 'filename', None) or save_dir}: the save failed; the run's "
        f"last complete checkpoint in {save_dir} is kept. Free some space, then launch again to resume from it",
    )


def dataloader_mismatch(err: BaseException, cfg: Any) -> Optional[DataloaderMismatchError]:
    """fairseq's "dataloader mismatch" as an error naming the hydra key; None for any other error.

    fairseq raises it on resuming when the saved position in the epoch is past the
    batches the data now makes (a manifest edited or replaced since the save), and
    advises its command-line flag ``--reset-dataloader``, which ``fairseq-hydra-train`` ignores.
    """
    if "dataloader mismatch" not in str(err):
        return None
    restore = _select(cfg, "checkpoint.restore_file")
    save_dir = _select(cfg, "checkpoint.save_dir")
    path = restore if restore and os.path.isabs(str(restore)) else os.path.join(str(save_dir or "."), str(restore))
    return DataloaderMismatchError(
        f"{path}: its position in the epoch does not fit the training data any more (the manifest in "
        f"{_select(cfg, 'task.data')} changed since it was saved). Relaunch with checkpoint.reset_dataloader=true "
        "to keep the model, optimiser and schedule and start a new epoch on the current data"
    )
OFFICIAL_MODEL_NAMES = ("data2vec_multi", "mae_image_pretraining", "mae_image_classification")  # the public code's
CONTINUE_ONCE_HASH_FILE = "continue_once.sha256"  # in the checkpoint folder: the stage-1 file's contents


@dataclass
class CheckpointSummary:
    path: str
    num_updates: int
    epoch: int
    cfg: Optional[Dict[str, Any]]  # None when the file's config cannot be read safely
    finetuned: bool = False  # a classifier (ours or official): no decoder, a head


def resolve_launch_path(path: str) -> str:
    """A relative path as the user meant it: against the folder they launched from.

    hydra changes into its run directory before the task is built, so a plain
    relative path would resolve against the wrong folder.
    """
    if os.path.isabs(path):
        return path
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return os.path.join(HydraConfig.get().runtime.cwd, path)
    except ImportError:  # hydra is optional outside fairseq-hydra-train
        pass
    return os.path.abspath(path)


def resolve_model_path(path: str) -> str:
    """``model.model_path`` against the launch folder, or as given when it names a hub repository.

    ``owner/name`` that is no file or folder under the launch folder is a Hugging
    Face repository id (e.g. ``ta012/SSLAM_pretrain``), which ``load_any`` downloads.
    """
    from ..checkpoints import looks_like_hub_repo_id

    resolved = resolve_launch_path(path)
    if not os.path.exists(resolved) and looks_like_hub_repo_id(path):
        return path
    return resolved


def read_checkpoint_summary(path: str) -> CheckpointSummary:
    """Update, epoch and config of a fairseq checkpoint, without reading its tensors.

    Raises:
        DamagedCheckpointError: the file is truncated or otherwise unreadable.
    """
    from ..checkpoints.files import describe_unreadable, refused_global

    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as err:
        if refused_global(path, err) is None:
            raise DamagedCheckpointError(f"{path}: {describe_unreadable(path)}") from err
        # Intact, but it needs the full unpickler (an old checkpoint): no summary.
        return CheckpointSummary(path, -1, -1, None)
    except Exception as err:  # truncated zip, EOF, bad header... (torch's words would not name the file)
        raise DamagedCheckpointError(f"{path}: {describe_unreadable(path)}") from err
    if not isinstance(state, dict) or "model" not in state:
        keys = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise DamagedCheckpointError(f"{path}: a PyTorch file but not a fairseq checkpoint (no 'model' entry; holds {keys})")
    history = state.get("optimizer_history") or [{}]
    itr = (state.get("extra_state") or {}).get("train_iterator") or {}
    cfg = state.get("cfg")
    names = list(state["model"]) if isinstance(state["model"], dict) else []
    finetuned = "head.weight" in names or any(n.startswith("model.blocks.") for n in names) or (
        _select(cfg, "model._name") == "sslam_classifier"
    )
    return CheckpointSummary(path, int(history[-1].get("num_updates", 0)), int(itr.get("epoch", 0)), cfg, finetuned)


def newest_intact_checkpoint(folder: str, exclude: str) -> Optional[CheckpointSummary]:
    """The intact ``checkpoint*.pt`` of ``folder`` with the most updates (then the newest file)."""
    intact: List[CheckpointSummary] = []
    for path in glob.glob(os.path.join(folder, "checkpoint*.pt")):
        if os.path.abspath(path) == os.path.abspath(exclude):
            continue
        try:
            intact.append(read_checkpoint_summary(path))
        except DamagedCheckpointError as err:
            logger.warning("skipping damaged checkpoint %s", err)
    if not intact:
        return None
    return max(intact, key=lambda s: (s.num_updates, os.path.getmtime(s.path)))


def _select(cfg: Any, dotted: str) -> Any:
    """A dotted key's value in a config or plain dicts; None where it is missing."""
    return _lookup(cfg, dotted)[1]


def _plain(cfg: Any) -> Any:
    """A config as plain dicts and lists, interpolations resolved."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return cfg


def _leaves(node: Any, prefix: str) -> Iterator[Tuple[str, Any]]:
    """(dotted key, value) of every leaf under ``node``; an empty mapping is a leaf."""
    if isinstance(node, Mapping) and node:
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}")
    else:
        yield prefix, node


def _schedule_length_keys(cfg: Mapping[str, Any]) -> List[str]:
    """``optimization.max_update`` when an lr schedule in use takes its length from it."""
    schedulers = [_select(cfg, "lr_scheduler")]
    groups = _select(cfg, "optimizer.groups")
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
    batch = _select(cfg, "dataset.batch_size")
    freq = _select(cfg, "optimization.update_freq")
    world = world_size or _select(cfg, "distributed_training.distributed_world_size")
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
    current = _plain(current)
    keys = list(COMPARED_KEYS) + _schedule_length_keys(saved) + _schedule_length_keys(current)
    for section in COMPARED_SECTIONS:
        for tree in (saved, current):
            keys += [key for key, _ in _leaves(tree.get(section), section) if tree.get(section) is not None]
    free = set(RELAUNCH_FREE_KEYS)
    if _lookup(current, "model._name")[1] == CLASSIFIER_MODEL_NAME:
        # the classifier's encoder is model.model_path's, written into the run's config when the
        # model is built (so it differs from the recipe's by design); its shape is checked when
        # the checkpoint's weights load, and its dropouts are always the fine-tuning ones
        free.add("model.encoder")
    changes: List[ConfigChange] = []
    for key in dict.fromkeys(keys):
        if key in free or any(key.startswith(prefix + ".") for prefix in free):
            continue
        had, old = _lookup(saved, key)
        has, new = _lookup(current, key)
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


def _lookup(cfg: Mapping[str, Any], dotted: str) -> Tuple[bool, Any]:
    """(present, value) of a dotted key in plain dicts."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


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
    if _select(cfg, ACCEPT_CHANGES_KEY):
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


def check_same_run(cfg: DictConfig, summary: CheckpointSummary) -> None:
    """Refuse to resume a checkpoint of another run (another model, task or starting point)."""
    if summary.cfg is None:
        return
    official = _select(summary.cfg, "model._name")
    if official in OFFICIAL_MODEL_NAMES:
        raise AnotherRunError(
            f"{summary.path}: an official EAT/SSLAM checkpoint (model {official!r}), not a checkpoint of this run: "
            "start from it with checkpoint.continue_once=... (pre-training) or model.model_path=... (fine-tuning), "
            "and move it out of the checkpoint folder"
        )
    different = []
    for key in SAME_RUN_KEYS:
        saved, current = _select(summary.cfg, key), _select(cfg, key)
        if saved != current and not (key == "checkpoint.continue_once" and _same_start(saved, current, cfg)):
            different.append(f"{key}: {saved!r} in the checkpoint, {current!r} now")
    if different:
        if any(d.startswith("checkpoint.continue_once") for d in different):
            raise AnotherRunError(
                f"{summary.path} continues another starting point ({'; '.join(different)}) and the files' "
                "contents differ: relaunch with the checkpoint's checkpoint.continue_once (a copy with the same "
                "contents is accepted), or give a new run its own folder with hydra.run.dir=..."
            )
        raise AnotherRunError(
            f"{summary.path} belongs to another run ({'; '.join(different)}). Resuming it would mix two runs: "
            "give this run its own folder with hydra.run.dir=..., or move that checkpoint folder away"
        )


def choose_checkpoint(cfg: DictConfig) -> Optional[CheckpointSummary]:
    """Set ``cfg.checkpoint`` for this launch; returns the checkpoint it resumes, if any.

    Makes ``save_dir`` absolute (relative to the run folder, where hydra runs)
    and ``restore_file`` / ``continue_once`` absolute (relative to the launch folder).
    """
    ckpt = cfg.checkpoint
    ckpt.save_dir = os.path.abspath(ckpt.save_dir)
    continue_once = ckpt.get("continue_once")
    if continue_once:
        ckpt.continue_once = continue_once = resolve_launch_path(continue_once)
    if ckpt.restore_file != DEFAULT_RESTORE_FILE:  # the user's explicit choice
        ckpt.restore_file = resolve_launch_path(ckpt.restore_file)
        logger.info("checkpoint.restore_file: starting from %s", ckpt.restore_file)
        return None

    if os.path.isdir(ckpt.save_dir):
        remove_partial_saves(ckpt.save_dir)
    last = os.path.join(ckpt.save_dir, f"checkpoint_last{ckpt.get('checkpoint_suffix', '')}.pt")
    resumed: Optional[CheckpointSummary] = None
    if os.path.exists(last):
        try:
            resumed = read_checkpoint_summary(last)
        except DamagedCheckpointError as err:
            resumed = newest_intact_checkpoint(ckpt.save_dir, exclude=last)
            if resumed is None:
                raise DamagedCheckpointError(
                    f"{err}. {ckpt.save_dir} holds no other intact checkpoint: move {last} away "
                    "to start this run again from the beginning"
                ) from err
            logger.warning("%s; resuming from the newest intact checkpoint %s instead", err, resumed.path)
            ckpt.restore_file = resumed.path
        check_same_run(cfg, resumed)
        logger.info("resuming from %s (update %d, epoch %d)", resumed.path, resumed.num_updates, resumed.epoch)
    elif continue_once:
        if not os.path.isfile(continue_once):
            raise FileNotFoundError(f"checkpoint.continue_once={continue_once!r} is not a file")
        check_start_checkpoint(cfg, continue_once)
        _record_start_hash(ckpt.save_dir, continue_once)
        logger.info(
            "no checkpoint in %s yet: starting from the weights of %s with a fresh optimiser, schedule and meters",
            ckpt.save_dir,
            continue_once,
        )
    else:
        logger.info("no checkpoint in %s yet: training from scratch", ckpt.save_dir)
    check_free_space(ckpt.save_dir, resumed)
    if continue_once:
        for flag in RESET_FLAGS:
            # a relaunch keeps reset_dataloader when asked (a changed manifest): the others would
            # throw away the run's optimiser, schedule or meters at every relaunch
            ckpt[flag] = resumed is None or (flag == "reset_dataloader" and bool(ckpt.get(flag)))
    return resumed


def check_start_checkpoint(cfg: DictConfig, path: str) -> CheckpointSummary:
    """``checkpoint.continue_once``: a readable checkpoint of a kind this task can continue.

    Raises:
        DamagedCheckpointError: empty, truncated or not a checkpoint (the message says which).
        WrongCheckpointError: a fine-tuned classifier given to continue pre-training.
    """
    try:
        start = read_checkpoint_summary(path)
    except DamagedCheckpointError as err:
        raise DamagedCheckpointError(f"checkpoint.continue_once={err}") from None
    if start.finetuned and _select(cfg, "task._name") == "sslam_pretraining":
        raise WrongCheckpointError(
            f"checkpoint.continue_once={path}: a fine-tuned classifier checkpoint (a head, no decoder), but "
            "pre-training continues a pre-training checkpoint: stage 1's checkpoint_last.pt or an official "
            "pre-trained EAT/SSLAM checkpoint"
        )
    return start


def _record_start_hash(save_dir: str, path: str) -> None:
    """Remember the contents of the run's stage-1 file, so a moved or copied one is recognised later."""
    from ..checkpoints.files import file_sha256

    os.makedirs(save_dir, exist_ok=True)
    record = os.path.join(save_dir, CONTINUE_ONCE_HASH_FILE)
    with open(record, "w", encoding="utf-8") as handle:
        handle.write(f"{file_sha256(path)}  {path}\n")


def _same_start(saved: Optional[str], current: Optional[str], cfg: DictConfig) -> bool:
    """Whether ``current`` holds the same bytes as the run's stage-1 file ``saved`` (moved or copied).

    Compared with the hash recorded at the run's first launch, or with ``saved``
    itself where no record exists and it is still there.
    """
    from ..checkpoints.files import file_sha256

    if not saved or not current or not os.path.isfile(current):
        return False
    record = os.path.join(cfg.checkpoint.save_dir, CONTINUE_ONCE_HASH_FILE)
    if os.path.isfile(record):
        with open(record, encoding="utf-8") as handle:
            expected = handle.read().split()[0]
    elif os.path.isfile(saved):
        expected = file_sha256(saved)
    else:
        return False
    same = file_sha256(current) == expected
    if same:
        logger.info("checkpoint.continue_once: %s has the contents of the run's %s (same SHA-256)", current, saved)
    return same


def already_finished(cfg: DictConfig, resumed: Optional[CheckpointSummary]) -> bool:
    """True when the checkpoint being resumed already holds ``optimization.max_update`` updates.

    fairseq checks ``max_update`` only after an update, so relaunching a finished
    run (typed again, or requeued by a scheduler) would train one update past the
    end and overwrite its last checkpoint; the launcher ends the launch instead.
    """
    max_update = _select(cfg, "optimization.max_update") or 0
    if resumed is None or max_update <= 0 or resumed.num_updates < max_update:
        return False
    logger.info(
        "%s already holds update %d and optimization.max_update=%d: nothing to train. Raise "
        "optimization.max_update to train on (with %s=true where the lr schedule follows it), or give a new "
        "run folder (hydra.run.dir=...)",
        resumed.path, resumed.num_updates, max_update, ACCEPT_CHANGES_KEY,
    )
    return True
