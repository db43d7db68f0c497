"""The fairseq layer: registered tasks, models and criteria wiring the plain-PyTorch core,
and the training system around them (process start-up, resume, preemption).

Importing it registers the classes with fairseq (fairseq's extension point,
``common.user_dir``) and changes nothing else in fairseq: the plugin's
replacements of a few fairseq functions are installed by the launcher
(:func:`.fairseq_adapter.install`, called by the recipes' hydra callback and in
every process the launcher starts).
"""

from . import (  # noqa: F401  (registration side effects)
    classification_criterion,
    classification_task,
    classifier_model,
    criterion,
    detection_criterion,
    detection_model,
    detection_task,
    model,
    task,
)
