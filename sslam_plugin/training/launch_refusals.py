"""What ends a launch with one line instead of a traceback: a bad checkpoint, changed settings, a full disk.

Each refusal is an exception whose message names the file or key, says what
it is and what to do; the launcher logs it as one line and exits with
:data:`LAUNCH_REFUSED_EXIT_STATUS` (:mod:`.processes`). fairseq's own words for
two of them are translated here: its "dataloader mismatch" advice (a
command-line flag ``fairseq-hydra-train`` ignores) and a save that a full disk
broke (:func:`disk_full`, which also removes the partial file).
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import shutil
from typing import Any, List, Optional

from .config_keys import select

__all__ = [
    "ChangedConfigError", "DamagedCheckpointError", "WrongCheckpointError", "AnotherRunError",
    "DataloaderMismatchError", "DiskFullError", "LaunchOptionsError", "LAUNCH_REFUSALS",
    "LAUNCH_REFUSED_EXIT_STATUS", "remove_partial_saves", "check_free_space", "disk_full", "dataloader_mismatch",
]

logger = logging.getLogger(__name__)

LAUNCH_REFUSED_EXIT_STATUS = 78  # sysexits.h EX_CONFIG: the checkpoint or the settings do not fit this launch
PARTIAL_SAVE_SUFFIX = ".tmp"  # fairseq writes checkpoint_*.pt.tmp, then renames it


class ChangedConfigError(ValueError):
    """A relaunch with settings that make it another experiment; the message lists each change."""


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


class LaunchOptionsError(ValueError):
    """A launch setting (:mod:`.launch_options`) that no process could run with; the message names the key."""


# Refusals the launcher reports as one line (no traceback).
LAUNCH_REFUSALS = (ChangedConfigError, DamagedCheckpointError, WrongCheckpointError, AnotherRunError,
                   DataloaderMismatchError, DiskFullError, LaunchOptionsError)


def remove_partial_saves(save_dir: str) -> List[str]:
    """Delete fairseq's leftover ``*.pt.tmp`` files: saves that a full disk or a kill interrupted.

    Safe under the run lock: no other launch saves into the folder meanwhile.
    """
    removed = sorted(glob.glob(os.path.join(glob.escape(save_dir), f"*.pt{PARTIAL_SAVE_SUFFIX}")))
    for path in removed:
        os.remove(path)
        logger.warning("removed %s, left by an interrupted checkpoint save", path)
    return removed


def check_free_space(save_dir: str, resumed: Optional[Any]) -> None:
    """Refuse to train when the checkpoint folder has no room for the next save.

    fairseq writes a whole new checkpoint before it replaces the old one, so it
    needs the size of the checkpoint being resumed (``resumed``, a
    :class:`.checkpoint_summary.CheckpointSummary`) free; a first launch has no
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
    save_dir = str(select(cfg, "checkpoint.save_dir") or ".")
    remove_partial_saves(save_dir)
    free = f"{shutil.disk_usage(save_dir).free / 2**20:.0f} MiB free" if os.path.isdir(save_dir) else "no free space"
    return DiskFullError(
        errno.ENOSPC,
        f"no space left on the device of {getattr(err, 'filename', None) or save_dir} ({free}): the save failed; "
        f"the run's last complete checkpoint in {save_dir} is kept. Free some space, then launch again to resume from it",
    )


def dataloader_mismatch(err: BaseException, cfg: Any) -> Optional[DataloaderMismatchError]:
    """fairseq's "dataloader mismatch" as an error naming the hydra key; None for any other error.

    fairseq raises it on resuming when the saved position in the epoch is past the
    batches the data now makes (a manifest edited or replaced since the save), and
    advises its command-line flag ``--reset-dataloader``, which ``fairseq-hydra-train`` ignores.
    """
    if "dataloader mismatch" not in str(err):
        return None
    restore = select(cfg, "checkpoint.restore_file")
    save_dir = select(cfg, "checkpoint.save_dir")
    path = restore if restore and os.path.isabs(str(restore)) else os.path.join(str(save_dir or "."), str(restore))
    return DataloaderMismatchError(
        f"{path}: its position in the epoch does not fit the training data any more (the manifest in "
        f"{select(cfg, 'task.data')} changed since it was saved). Relaunch with checkpoint.reset_dataloader=true "
        "to keep the model, optimiser and schedule and start a new epoch on the current data"
    )
