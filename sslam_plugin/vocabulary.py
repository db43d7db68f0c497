"""The words a user, a recipe or a checkpoint chooses among, and their old names.

One module decides what each word means (STYLE.md item 14), so every entry
point (the classifier model, exports, the HEAR module, the inference API, the
command lines, the probe) accepts the same names and refuses others with the
same message:

* poolings, how a clip embedding is read from the encoder's tokens: ``"cls"``
  (the CLS token) or ``"mean"`` (the mean of the patch tokens);
* granularities, what :meth:`PretrainedAudioEncoder.extract_features` returns
  (see :mod:`sslam_plugin.clips`).

Names from before 0.2, and the official code's, are mapped in one table,
:data:`LEGACY_NAMES`, read only where names come in: configs, command lines and
checkpoints. Everything past those edges sees the current names only.
"""

from __future__ import annotations

import logging
from typing import Dict, Literal, Tuple

__all__ = [
    "Pooling",
    "POOLINGS",
    "Granularity",
    "GRANULARITIES",
    "LEGACY_NAMES",
    "current_name",
    "parse_pooling",
    "parse_granularity",
]

logger = logging.getLogger(__name__)

Pooling = Literal["cls", "mean"]
POOLINGS: Tuple[str, ...] = ("cls", "mean")
Granularity = Literal["patch", "utterance", "all", "time"]
GRANULARITIES: Tuple[str, ...] = ("patch", "utterance", "all", "time")

# kind -> {old name: current name}
LEGACY_NAMES: Dict[str, Dict[str, str]] = {
    # the official fine-tuning's model.prediction_mode (also this package's before 0.2); read without a
    # warning, since official checkpoints will always carry them
    "pooling": {"CLS_TOKEN": "cls", "MEAN_POOLING": "mean"},
    # "frame" meant the patch tokens before 0.2
    "granularity": {"frame": "patch"},
    # criterion.loss_weights keys: "frame" meant the patch-level loss before 0.2
    "loss_term": {"frame": "patch", "frame_mixed": "patch_mixed"},
}
_SILENT = {"pooling"}  # kinds whose old names are still current elsewhere (official checkpoints)


def current_name(kind: str, name: str, key: str) -> str:
    """``name`` as called now: an old name of ``kind`` (see :data:`LEGACY_NAMES`) is mapped, others kept.

    ``key`` names where the value came from (``model.pooling``, ``--granularity``)
    for the warning that tells the user the new name.
    """
    new = LEGACY_NAMES[kind].get(name)
    if new is None:
        return name
    if kind not in _SILENT:
        logger.warning("%s: %r is the old name of %r; use %r", key, name, new, new)
    return new


def parse_pooling(value: object, key: str = "pooling") -> str:
    """``"cls"`` or ``"mean"`` from a current name (any case) or an old one (``CLS_TOKEN``,
    ``MEAN_POOLING``, also as ``PredictionMode.CLS_TOKEN``).

    Raises:
        ValueError: any other value, naming ``key``.
    """
    name = str(value).rsplit(".", 1)[-1]  # "PredictionMode.CLS_TOKEN" in some official configs
    name = current_name("pooling", name.upper(), key) if name.upper() in LEGACY_NAMES["pooling"] else name.lower()
    if name not in POOLINGS:
        raise ValueError(f"{key} must be one of {', '.join(POOLINGS)} (or CLS_TOKEN / MEAN_POOLING), got {value!r}")
    return name


def parse_granularity(value: object, key: str = "granularity") -> str:
    """One of :data:`GRANULARITIES` (the old ``"frame"`` is mapped to ``"patch"`` with a warning).

    Raises:
        ValueError: any other value, naming ``key``.
    """
    name = current_name("granularity", str(value), key)
    if name not in GRANULARITIES:
        raise ValueError(f"{key} must be one of {', '.join(GRANULARITIES)} (or frame), got {value!r}")
    return name
