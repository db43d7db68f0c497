"""Run ``fairseq-hydra-train`` and record each update's exact numbers (for the fine-tuning replay test).

Usage: ``python finetune_trajectory.py OUT.json FAIRSEQ_HYDRA_TRAIN_ARGS...``

The same entry point as the console script (``fairseq_cli.hydra_train.cli_main``);
three methods are wrapped read-only, as the official trajectory was recorded:

- the classification criterion's ``forward`` (training batches): loss sum and sample size, and at the
  first one (before any update) the classification head's weights (``head.*``, ``fc_norm.*``);
- ``Trainer.clip_grad_norm``: the gradient norm;
- ``CompositeOptimizer.step``: every trained parameter's lr and weight decay just
  before the step, by its name in the official fine-tuned layout.

OUT.json: ``{"updates": [{"loss_sum", "sample_size", "gnorm", "lr": {name: lr},
"weight_decay": {name: wd}}, ...], "start_head": {name: nested list}}``, written when training ends.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List


HEAD = ("head.", "fc_norm.")  # the classifier on the pooled encoder output, by its official names


def install_recorders(updates: List[Dict[str, Any]], start_head: Dict[str, Any]) -> None:
    from fairseq.optim.composite import CompositeOptimizer
    from fairseq.trainer import Trainer

    from sslam_plugin.training.classification_criterion import SSLAMClassificationCriterion

    trainer_ref: Dict[str, Trainer] = {}

    criterion_forward = SSLAMClassificationCriterion.forward

    def forward(self, model, sample, reduce=True):
        if model.training and not updates:  # the weights the first update starts from
            start_head.update({name: value.tolist() for name, value in model.state_dict().items()
                               if name.startswith(HEAD)})
        loss, sample_size, log = criterion_forward(self, model, sample, reduce)
        if model.training:
            updates.append({"loss_sum": float(loss), "sample_size": float(sample_size)})
        return loss, sample_size, log

    clip_grad_norm = Trainer.clip_grad_norm

    def clip(self, clip_norm):
        trainer_ref["trainer"] = self
        norm = clip_grad_norm(self, clip_norm)
        updates[-1]["gnorm"] = float(norm)
        return norm

    optimizer_step = CompositeOptimizer.step

    def step(self, closure=None, groups=None):
        # official names share the Parameter objects of the model (state_dict keep_vars)
        names = {id(p): name for name, p in trainer_ref["trainer"].model.state_dict(keep_vars=True).items()}
        lrs, decays = {}, {}
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                for param in group["params"]:
                    name = names.get(id(param), f"<unnamed {tuple(param.shape)}>")
                    lrs[name], decays[name] = float(group["lr"]), float(group["weight_decay"])
        updates[-1]["lr"], updates[-1]["weight_decay"] = lrs, decays
        return optimizer_step(self, closure, groups)

    SSLAMClassificationCriterion.forward = forward
    Trainer.clip_grad_norm = clip
    CompositeOptimizer.step = step


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    updates: List[Dict[str, Any]] = []
    start_head: Dict[str, Any] = {}
    install_recorders(updates, start_head)
    from fairseq_cli.hydra_train import cli_main

    sys.argv = ["fairseq-hydra-train", *args]
    try:
        cli_main()
    finally:
        with open(out, "w") as f:
            json.dump({"updates": updates, "start_head": start_head}, f)


if __name__ == "__main__":
    main()
