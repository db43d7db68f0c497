"""The classification loss and its normalisation, against hand computations of the official rules.

Official (EAT ``models/EAT_audio_classification.py`` with fairseq's ModelCriterion):
multi-label BCE summed over clips and classes, divided by the number of positive
labels; single-label cross-entropy (label smoothing only without mixup) or, for
Speech Commands, BCE on one-hot targets, divided by the number of clips.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("fairseq")

from fairseq import metrics  # noqa: E402

from sslam_plugin.training.classification_criterion import (  # noqa: E402
    ClassificationCriterionConfig,
    SSLAMClassificationCriterion,
)


class FixedModel(torch.nn.Module):
    """Returns fixed logits; with mixup configured it mixes the targets with their reverse (lam 0.75)."""

    def __init__(self, logits: torch.Tensor, mixup_alpha: float = 0.0):
        super().__init__()
        self.logits = logits
        self.augmentation = SimpleNamespace(mixup_alpha=mixup_alpha)

    def forward(self, source, target=None):
        if self.training and self.augmentation.mixup_alpha > 0:
            target = 0.75 * target + 0.25 * target.flip(0)
        return {"logits": self.logits, "target": target}


def criterion(**cfg) -> SSLAMClassificationCriterion:
    cfg.setdefault("multilabel", True)
    return SSLAMClassificationCriterion(ClassificationCriterionConfig(**cfg), task=None)


def sample(target: torch.Tensor) -> dict:
    return {"net_input": {"source": torch.zeros(len(target), 1, 16, 16)}, "target": target}


LOGITS = torch.tensor([[0.5, -1.0, 2.0], [-0.3, 0.8, 0.1], [1.5, 0.2, -2.0], [0.0, -0.7, 0.9]])
MULTI_HOT = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]])  # 7 positives in 4 clips
ONE_HOT = torch.eye(3)[[0, 2, 1, 2]]


def test_multilabel_bce_is_divided_by_the_number_of_positive_labels():
    loss, sample_size, log = criterion()(FixedModel(LOGITS).train(), sample(MULTI_HOT))
    expected = sum(
        -(y * torch.log(torch.sigmoid(x)) + (1 - y) * torch.log(1 - torch.sigmoid(x)))
        for x, y in zip(LOGITS.flatten(), MULTI_HOT.flatten())
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert sample_size == 7.0
    # mixup keeps each clip's label mass: still 7
    _, mixed_size, _ = criterion()(FixedModel(LOGITS, mixup_alpha=0.8).train(), sample(MULTI_HOT))
    assert mixed_size == pytest.approx(7.0)


def test_multilabel_loss_per_clip_switch():
    loss, sample_size, _ = criterion(multilabel_loss_per_clip=True)(FixedModel(LOGITS).train(), sample(MULTI_HOT))
    assert sample_size == 4
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(LOGITS, MULTI_HOT, reduction="sum").item())


def test_single_label_cross_entropy_smooths_only_in_training_without_mixup():
    ce = criterion(multilabel=False, label_smoothing=0.1)
    probs = torch.log_softmax(LOGITS, dim=1)
    smoothed = ONE_HOT * 0.9 + 0.1 / 3
    loss, sample_size, _ = ce(FixedModel(LOGITS).train(), sample(ONE_HOT))
    assert sample_size == 4
    assert loss.item() == pytest.approx(-(smoothed * probs).sum().item(), rel=1e-6)
    loss, _, _ = ce(FixedModel(LOGITS).eval(), sample(ONE_HOT))
    assert loss.item() == pytest.approx(-(ONE_HOT * probs).sum().item(), rel=1e-6)
    # with mixup the official loss is -sum(mixed * log_softmax): no smoothing on top
    loss, _, _ = ce(FixedModel(LOGITS, mixup_alpha=0.8).train(), sample(ONE_HOT))
    mixed = 0.75 * ONE_HOT + 0.25 * ONE_HOT.flip(0)
    assert loss.item() == pytest.approx(-(mixed * probs).sum().item(), rel=1e-6)


def test_single_label_bce_for_speech_commands():
    loss, sample_size, _ = criterion(multilabel=False, single_label_bce=True, label_smoothing=0.1)(
        FixedModel(LOGITS).train(), sample(ONE_HOT)
    )
    assert sample_size == 4  # clips, not positives
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(LOGITS, ONE_HOT, reduction="sum").item())


def test_logged_loss_is_the_mean_in_nats():
    logs = [{"loss": 14.0, "sample_size": 7.0, "multilabel": True}, {"loss": 7.0, "sample_size": 3.0, "multilabel": True}]
    with metrics.aggregate() as agg:
        SSLAMClassificationCriterion.reduce_metrics(logs)
    assert agg.get_smoothed_values()["loss"] == pytest.approx(2.1)


def test_label_smoothing_out_of_range_is_refused():
    with pytest.raises(ValueError, match="criterion.label_smoothing must be in"):
        criterion(multilabel=False, label_smoothing=1.0)
