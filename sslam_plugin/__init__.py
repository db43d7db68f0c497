"""SSLAM and EAT audio self-supervised pre-training as a fairseq plugin.

Importing this package needs only PyTorch. When fairseq is already imported (as
``fairseq-hydra-train`` does with ``common.user_dir``), the task, model and
criterion are registered with it too.
"""

import sys

__version__ = "0.1.0"


def register_with_fairseq() -> None:
    """Register the fairseq task, model and criterion (imports fairseq)."""
    from . import training  # noqa: F401  (registration happens at import)


if "fairseq" in sys.modules:
    register_with_fairseq()
