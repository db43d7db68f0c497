"""SSLAM and EAT audio self-supervised pre-training as a fairseq plugin.

Importing this package needs only PyTorch; ``load_encoder`` loads released
weights for feature extraction and inference. When fairseq is already imported (as
``fairseq-hydra-train`` does with ``common.user_dir``), the task, model and
criterion are registered with it too.
"""

import sys
from typing import TYPE_CHECKING, Any, Union
from os import PathLike

if TYPE_CHECKING:  # pragma: no cover
    from .inference import PretrainedAudioEncoder

from ._version import __version__


def load_encoder(path: Union[str, PathLike], **kwargs: Any) -> "PretrainedAudioEncoder":
    """Load released weights as a ready-to-use encoder (no fairseq needed).

    ``path`` is an export folder (``scripts/convert_checkpoint.py``) or a fairseq
    checkpoint (this plugin's, or official EAT/SSLAM, pre-trained or fine-tuned).
    Returns a :class:`sslam_plugin.inference.PretrainedAudioEncoder`:
    ``encoder(waveform, sample_rate)`` gives (N, 1 + L, D) tokens and
    ``encoder.extract_features(..., granularity=...)`` the other granularities.
    Keyword arguments: see :func:`sslam_plugin.inference.load_encoder`.
    """
    from .inference import load_encoder as _load_encoder

    return _load_encoder(path, **kwargs)


def register_with_fairseq() -> None:
    """Register the fairseq task, model and criterion (imports fairseq)."""
    from . import training  # noqa: F401  (registration happens at import)


if "fairseq" in sys.modules:
    register_with_fairseq()
