"""The fairseq layer: registered tasks, models and criteria wiring the plain-PyTorch core,
and the training system around them (process start-up, resume, preemption).

Importing it registers the classes with fairseq and installs the plugin's
replacements of a few fairseq functions (:mod:`.fairseq_compat`).
"""

from . import (  # noqa: F401  (registration side effects)
    classification_criterion,
    classification_task,
    classifier_model,
    criterion,
    model,
    task,
)
from .fairseq_compat import install as _install_fairseq_compat

_install_fairseq_compat()
