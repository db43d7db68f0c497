import torch

from sslam_plugin.models.losses import regression_loss
from sslam_plugin.models.targets import average_layer_targets, utterance_targets


def by_hand(layers, k):
    """Instance norm over tokens per channel, mean of the last k, layer norm over channels."""
    normed = []
    for y in layers[-k:]:
        mean = y.mean(dim=1, keepdim=True)
        var = ((y - mean) ** 2).mean(dim=1, keepdim=True)
        normed.append((y - mean) / torch.sqrt(var + 1e-5))
    avg = sum(normed) / k
    mean = avg.mean(dim=-1, keepdim=True)
    var = ((avg - mean) ** 2).mean(dim=-1, keepdim=True)
    return (avg - mean) / torch.sqrt(var + 1e-5)


def test_targets_match_hand_computation():
    g = torch.Generator().manual_seed(0)
    layers = [torch.randn(2, 5, 4, generator=g) * (i + 1) + i for i in range(3)]
    for k in (1, 2, 3):
        assert torch.allclose(average_layer_targets(layers, k), by_hand(layers, k), atol=1e-5)
    # top_k above the depth uses every layer
    assert torch.allclose(average_layer_targets(layers, 12), by_hand(layers, 3), atol=1e-5)
    assert torch.allclose(utterance_targets(layers, 2), by_hand(layers, 2).mean(dim=1), atol=1e-5)


def test_regression_loss_is_mse_over_sqrt_dim():
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    target = torch.tensor([[0.0, 2.0, 5.0, 4.0]])
    assert torch.allclose(regression_loss(pred, target), torch.tensor([[0.5, 0.0, 2.0, 0.0]]))
