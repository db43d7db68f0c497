"""Dotted keys (``"checkpoint.save_dir"``) read from a hydra config or from a checkpoint's plain dicts."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Tuple

__all__ = ["lookup", "select", "plain", "leaves"]


def plain(cfg: Any) -> Any:
    """A config as plain dicts and lists, interpolations resolved (plain values as given)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return cfg


def lookup(cfg: Mapping[str, Any], dotted: str) -> Tuple[bool, Any]:
    """(present, value) of a dotted key in plain dicts or a hydra config (a mapping too)."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def select(cfg: Any, dotted: str) -> Any:
    """A dotted key's value; None where it is missing."""
    return lookup(cfg, dotted)[1]


def leaves(node: Any, prefix: str) -> Iterator[Tuple[str, Any]]:
    """(dotted key, value) of every leaf under ``node``; an empty mapping is a leaf."""
    if isinstance(node, Mapping) and node:
        for key, value in node.items():
            yield from leaves(value, f"{prefix}.{key}")
    else:
        yield prefix, node

