"""The fairseq layer: registered tasks, models and criteria wiring the plain-PyTorch core."""

from . import (  # noqa: F401  (registration side effects)
    classification_criterion,
    classification_task,
    classifier_model,
    criterion,
    model,
    task,
)
