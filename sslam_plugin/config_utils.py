"""Build plain config dataclasses from nested mappings (hydra/omegaconf output, checkpoints)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, Type, TypeVar

__all__ = ["dataclass_from_dict"]

T = TypeVar("T")


def dataclass_from_dict(cls: Type[T], data: Mapping[str, Any]) -> T:
    """Instantiate ``cls`` from ``data``, recursing into nested dataclass fields.

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
