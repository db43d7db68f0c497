"""Readable names for the learning rates fairseq logs per optimizer group (``lr_block_3``, not ``lr_2484968c...``).

fairseq's composite optimizer with ``dynamic_groups`` keys a group by the md5 of
the parameters' ``optim_overrides`` (the layer-decay lr scale) and its group
name, and ``Trainer.lr_step_update`` logs ``lr_{key}`` for each. The keys stay
as they are (checkpoints hold the optimizer state under them); only the logged
name changes, derived from the parameters in the group: the encoder block they
belong to (``block_3``), ``front_end`` for the others, and the weight-decay
group when it is not the default (``block_3_no_weight_decay``).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Dict, Iterable, List, Tuple

from fairseq.logging import metrics

__all__ = ["composite_group_key", "readable_group_names", "lr_step_update"]

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_HASHED = re.compile(r"[0-9a-f]{32}")


def composite_group_key(group: str, overrides: Dict[str, Any]) -> str:
    """The key fairseq's composite optimizer (``dynamic_groups``) gives parameters with these overrides."""
    config = dict(overrides, group_name=group)
    return hashlib.md5(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _name_of(group: str, names: List[str]) -> str:
    blocks = {int(m.group(1)) for m in (_BLOCK.search(n) for n in names) if m}
    if len(blocks) == 1 and all(_BLOCK.search(n) for n in names):
        name = f"block_{blocks.pop()}"
    elif not blocks:
        name = "front_end"  # layer decay reaches, besides the blocks, only the front end (layer 0)
    else:
        name = "blocks_" + "_".join(str(b) for b in sorted(blocks))
    return name if group == "default" else f"{name}_{group}"


def readable_group_names(named_parameters: Iterable[Tuple[str, Any]]) -> Dict[str, str]:
    """{composite optimizer key: readable name} for the hashed keys of these parameters' groups."""
    members: Dict[str, Tuple[str, List[str]]] = {}
    for name, param in named_parameters:
        overrides = getattr(param, "optim_overrides", None)
        if overrides is None or not getattr(param, "requires_grad", True):
            continue
        group = getattr(param, "param_group", "default")
        members.setdefault(composite_group_key(group, overrides), (group, []))[1].append(name)
    readable: Dict[str, str] = {}
    for key, (group, names) in members.items():
        name = _name_of(group, names)
        readable[key] = name if name not in readable.values() else f"{name}_{key[:8]}"
    return readable


def _lr_name(trainer: Any, key: str) -> str:
    if not _HASHED.fullmatch(key):
        return key
    names = getattr(trainer, "_sslam_lr_names", None)
    if names is None:
        names = readable_group_names(trainer.get_model().named_parameters())
        trainer._sslam_lr_names = names
    return names.get(key, key)


def lr_step_update(self: Any) -> Any:
    """``Trainer.lr_step_update``: as fairseq's, logging each group's lr under its readable name."""
    new_lr = self.lr_scheduler.step_update(self.get_num_updates())
    if isinstance(new_lr, dict):
        for key, value in new_lr.items():
            metrics.log_scalar(f"lr_{_lr_name(self, key)}", value, weight=0, priority=300)
        return new_lr.get("default", next(iter(new_lr.values())))
    metrics.log_scalar("lr", new_lr, weight=0, priority=300)
    return new_lr
