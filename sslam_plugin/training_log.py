"""Reading a fairseq training log (``hydra_train.log``) back into series per update.

fairseq logs every ``common.log_interval`` updates one ``train_inner`` line and,
after each validation, one line per validated subset. With
``common.log_format=simple`` (the recipes' setting) they read::

    [2026-01-01 12:00:00,000][train_inner][INFO] - epoch 001:      1 / 12 loss=284.488, loss_patch=21.6676, ..., num_updates=1, lr_default=1.66667e-05, ...
    [2026-01-01 12:00:09,000][valid][INFO] - epoch 001 | valid on 'valid' subset | loss 9.794 | mAP 0.50423 | ... | num_updates 6

With ``common.log_format=json`` the same values follow ``- `` as a JSON object
(validation keys prefixed with the subset, ``valid_loss``). Lines in fairseq's
own console format (``2026-01-01 12:00:00 | INFO | train_inner | ...``) are read too.

hydra appends to ``hydra_train.log`` when a run is launched again, so a resumed
run's log holds every launch; a launch that resumed from an earlier checkpoint
than the last logged update logs some updates again, and its values replace the
earlier launch's from that update on (they are what the checkpoints hold).

No fairseq or matplotlib import: this reads text.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

__all__ = ["Series", "TrainingLog", "read_training_log", "find_training_log", "LOG_NAME"]

LOG_NAME = "hydra_train.log"  # hydra's file log, in the run folder: ${hydra.job.name}.log

Series = Dict[int, float]  # num_updates -> value

# [asctime][logger][LEVEL] - message  (hydra's job logging)
_HYDRA_LINE = re.compile(r"^\[[^\]]*\]\[(?P<name>[^\]]+)\]\[[A-Z]+\] - (?P<msg>.*)$")
# asctime | LEVEL | logger | message  (fairseq-train's console format)
_FAIRSEQ_LINE = re.compile(r"^\S+ \S+ \| [A-Z]+ \| (?P<name>\S+) \| (?P<msg>.*)$")
_INNER_PREFIX = re.compile(r"^epoch \d+:\s+\d+ / \d+ ")  # "epoch 001:      1 / 12 "
_KEY_VALUE = re.compile(r"([A-Za-z_][\w./-]*)=([^,\s]+)")
_VALID_SUBSET = re.compile(r"\| (?:valid|eval) on '(?P<subset>[^']+)' subset \|")
# values in a line that are not measurements of the update
_NOT_A_SERIES = {"epoch", "update", "num_updates"}


def _number(text: object) -> Optional[float]:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value


@dataclass
class TrainingLog:
    """The numeric values of a training log.

    ``train``: key -> {num_updates: value} of the ``train_inner`` lines, keys
    in the order they first appear. ``valid``: subset -> key -> series of the
    validation lines.
    """

    path: Path
    train: Dict[str, Series] = field(default_factory=dict)
    valid: Dict[str, Dict[str, Series]] = field(default_factory=dict)

    @property
    def updates(self) -> List[int]:
        """Every update with a ``train_inner`` line, ascending."""
        return sorted({u for series in self.train.values() for u in series})

    def series(self, key: str) -> List[Tuple[int, float]]:
        """(update, value) pairs of a ``train_inner`` key, ascending; empty when never logged."""
        return sorted(self.train.get(key, {}).items())


def _add(target: Dict[str, Series], values: Dict[str, float], update: int) -> None:
    """Record one line's values; a line at or before the latest update starts a relaunch's history."""
    latest = max((u for series in target.values() for u in series), default=None)
    if latest is not None and update <= latest:
        for series in target.values():
            for stale in [u for u in series if u >= update]:
                del series[stale]
    for key, value in values.items():
        target.setdefault(key, {})[update] = value


def _parse_message(name: str, msg: str) -> Optional[Tuple[str, Dict[str, float]]]:
    """("train_inner" or "valid:SUBSET", values with num_updates) of a message, or None."""
    values: Dict[str, float] = {}
    if msg.startswith("{"):  # common.log_format=json
        try:
            record = json.loads(msg)
        except json.JSONDecodeError:
            return None
        if not isinstance(record, dict):
            return None
        if name == "train_inner":
            kind, prefix = "train_inner", ""
        elif name != "train" and f"{name}_num_updates" in record:
            kind, prefix = f"valid:{name}", f"{name}_"
        else:
            return None
        for key, raw in record.items():
            value = _number(raw)
            if value is not None and key.startswith(prefix):
                values[key[len(prefix):]] = value
    elif name == "train_inner":
        match = _INNER_PREFIX.match(msg)
        if match is None:
            return None
        kind = "train_inner"
        for key, raw in _KEY_VALUE.findall(msg[match.end():]):
            value = _number(raw)
            if value is not None:
                values[key] = value
    else:
        match = _VALID_SUBSET.search(msg)
        if match is None:
            return None
        kind = f"valid:{match.group('subset')}"
        for part in msg[match.end():].split(" | "):
            key, _, raw = part.strip().partition(" ")
            value = _number(raw)
            if key and value is not None:
                values[key] = value
    if "num_updates" not in values or not math.isfinite(values["num_updates"]):
        return None
    return kind, values


def read_training_log(path: Union[str, Path]) -> TrainingLog:
    """Parse a fairseq training log (see the module docstring for the formats read).

    Raises FileNotFoundError when ``path`` is not a file. A log without any
    ``train_inner`` line gives an empty ``train``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such training log")
    log = TrainingLog(path=path)
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.rstrip("\n")
            match = _HYDRA_LINE.match(line) or _FAIRSEQ_LINE.match(line)
            if match is None:
                continue
            parsed = _parse_message(match.group("name"), match.group("msg"))
            if parsed is None:
                continue
            kind, values = parsed
            update = int(values["num_updates"])
            values = {k: v for k, v in values.items() if k not in _NOT_A_SERIES}
            if kind == "train_inner":
                _add(log.train, values, update)
            else:
                _add(log.valid.setdefault(kind.split(":", 1)[1], {}), values, update)
    return log


def find_training_log(path: Union[str, Path]) -> Path:
    """The log of a run: ``path`` itself, or ``path/hydra_train.log`` for a run folder.

    Raises FileNotFoundError naming what was looked for.
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / LOG_NAME
        if candidate.is_file():
            return candidate
        raise FileNotFoundError(
            f"{path}: a folder without {LOG_NAME}; give a run folder (hydra.run.dir, e.g. runs/eat_stage1) "
            "or the log file itself"
        )
    if path.is_file():
        return path
    raise FileNotFoundError(f"{path}: no such training log or run folder")
