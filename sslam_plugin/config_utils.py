"""Config dataclasses from what arrives: hydra/omegaconf nodes, checkpoint and export mappings."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, Type, TypeVar

__all__ = ["as_config", "dataclass_from_dict"]

T = TypeVar("T")


def as_config(cfg: Any, cls: Type[T]) -> T:
    """A registered class's config as its dataclass ``cls`` (nested core dataclasses included).

    fairseq hands ``build_model`` an omegaconf node typed by the registered
    dataclass (it merges the run's values into it); tests and library callers
    pass the dataclass itself. A node of another type (a plain mapping) is
    merged into ``cls``'s defaults first, so an unknown key fails naming it.
    """
    if isinstance(cfg, cls):
        return cfg
    from omegaconf import OmegaConf  # the training stack's config library; exports never get here

    if not OmegaConf.is_config(cfg) or OmegaConf.get_type(cfg) is not cls:
        cfg = OmegaConf.merge(OmegaConf.structured(cls), cfg)
    return OmegaConf.to_object(cfg)


def dataclass_from_dict(cls: Type[T], data: Mapping[str, Any]) -> T:
    """Instantiate ``cls`` from the plain mapping ``data`` (an export's or checkpoint's JSON),
    recursing into nested dataclass fields.

    Keys the dataclass does not declare (``_name`` and fairseq's own extras) are
    ignored; missing keys keep their defaults.
    """
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        field_type = hints[f.name]
        if dataclasses.is_dataclass(field_type) and isinstance(value, Mapping):
            value = dataclass_from_dict(field_type, value)
        kwargs[f.name] = value
    return cls(**kwargs)
