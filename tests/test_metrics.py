import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from sslam_plugin.metrics import accuracy, average_precision, mean_average_precision


def test_average_precision_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 7)) < 0.2).astype(np.float32)
    scores = np.round(rng.standard_normal((200, 7)) + targets, 1)  # rounding creates ties
    ours = average_precision(torch.from_numpy(scores), torch.from_numpy(targets)).numpy()
    for c in range(7):
        assert ours[c] == pytest.approx(average_precision_score(targets[:, c], scores[:, c]), abs=1e-12)


def test_map_skips_classes_without_positives():
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.1], [0.4, 0.3, 0.2]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    value, per_class = mean_average_precision(scores, targets)
    # class 0: ranking 0.9 (+), 0.4 (+), 0.2 (-) -> AP 1; classes 1 and 2 have no positive
    assert per_class[0] == 1.0 and torch.isnan(per_class[1:]).all()
    assert value == 1.0


def test_accuracy_from_indices_or_one_hot():
    scores = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0]])
    assert accuracy(scores, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert accuracy(scores, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])) == pytest.approx(2 / 3)
