"""Errors for checkpoints and exports that cannot be used; every message names the file."""

from __future__ import annotations

from typing import Sequence

__all__ = ["CheckpointError", "CorruptCheckpointError", "UntrustedCheckpointError", "UnknownCheckpointError", "list_keys"]

MAX_LISTED_KEYS = 40


class CheckpointError(ValueError):
    """A checkpoint or export that cannot be used; the message names the file."""


class CorruptCheckpointError(CheckpointError):
    """The file is not a readable checkpoint (truncated, corrupted, not PyTorch)."""


class UntrustedCheckpointError(CheckpointError):
    """The checkpoint needs the full unpickler and the caller did not trust it."""


class UnknownCheckpointError(CheckpointError):
    """A readable checkpoint of a model this package does not know; lists the unmatched keys."""


def list_keys(keys: Sequence[str]) -> str:
    """At most MAX_LISTED_KEYS sorted keys, for messages."""
    keys = sorted(keys)
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = len(keys) - MAX_LISTED_KEYS
    return f"[{shown}{f', ... and {more} more' if more > 0 else ''}]"
