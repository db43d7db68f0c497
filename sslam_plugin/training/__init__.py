"""The fairseq layer: registered task, model and criterion wiring the plain-PyTorch core."""

from . import criterion, model, task  # noqa: F401  (registration side effects)
