import numpy as np
import pytest
import torch

from sslam_plugin.masking import inverse_block_mask
from sslam_plugin.models import AudioEncoder, BootstrapPretrainer, EncoderConfig

from conftest import tiny_config


def batch(clips=3, frames=128, clones=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    fbank = torch.randn(clips, 1, frames, 128, generator=g)
    grid = (frames // 16, 8)
    mask = np.concatenate([inverse_block_mask(grid, clones, rng=np.random.default_rng([seed, i])) for i in range(clips)])
    return fbank, torch.from_numpy(mask)


def test_losses_are_finite_and_every_parameter_learns():
    torch.manual_seed(0)
    model = BootstrapPretrainer(tiny_config())
    fbank, mask = batch()
    out = model(fbank, mask)
    assert set(out.losses) == {"patch", "utterance"}
    assert int(out.sample_size) == int(mask.sum())
    total = sum(out.losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.teacher.parameters())


def test_student_never_sees_masked_patches():
    torch.manual_seed(0)
    model = BootstrapPretrainer(tiny_config(decoder={"mask_noise_std": 0.0})).eval()
    fbank, mask = batch(clips=1, clones=1)
    changed = fbank.clone()
    patch_mask = mask[0].reshape(8, 8)  # (time rows, freq cols) for 128 frames
    for r, c in zip(*torch.nonzero(patch_mask, as_tuple=True)):
        changed[0, 0, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] = 5.0
    with torch.no_grad():
        a, b = model.student(fbank, mask), model.student(changed, mask)
        assert torch.allclose(a.cls, b.cls, atol=1e-6)
        assert torch.allclose(a.patches, b.patches, atol=1e-6)
        # ...while the teacher sees the whole clip
        assert not torch.allclose(model.teacher_layers(fbank)[-1], model.teacher_layers(changed)[-1])


def test_batch_equals_clips_one_at_a_time():
    torch.manual_seed(0)
    enc = AudioEncoder(EncoderConfig(embed_dim=32, depth=2, num_heads=2)).eval()
    fbank, mask = batch(clips=3, clones=1)
    with torch.no_grad():
        together = enc(fbank, mask).x
        alone = torch.cat([enc(fbank[i : i + 1], mask[i : i + 1]).x for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("frames", [64, 512, 1024])
def test_any_length_that_is_a_multiple_of_16(frames):
    """Any multiple of 16 frames gives frames/16 x 8 patches, and the summed losses of a batch are
    those of its clips taken one at a time (nothing in the step depends on a fixed length)."""
    torch.manual_seed(0)
    model = BootstrapPretrainer(tiny_config(decoder={"mask_noise_std": 0.0})).eval()
    fbank, mask = batch(clips=2, frames=frames)
    with torch.no_grad():
        assert model.encoder(fbank).x.shape == (2, 1 + frames // 16 * 8, 32)
        out = model(fbank, mask)
        alone = [model(fbank[i : i + 1], mask[2 * i : 2 * i + 2]) for i in range(2)]
    assert int(out.sample_size) == int(mask.sum()) == sum(int(a.sample_size) for a in alone)
    patch = sum(float(a.losses["patch"]) for a in alone)
    assert float(out.losses["patch"]) == pytest.approx(patch, rel=1e-4)
    # the utterance term is scaled by the batch's sample_size (so it keeps its weight after fairseq's division)
    utterance = sum(float(a.losses["utterance"]) / float(a.sample_size) for a in alone) * float(out.sample_size)
    assert float(out.losses["utterance"]) == pytest.approx(utterance, rel=1e-4)


def test_bad_shapes_say_what_arrived():
    model = BootstrapPretrainer(tiny_config())
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        model.encoder(torch.zeros(1, 1, 100, 128))
    with pytest.raises(ValueError, match=r"expected fbank of shape \(batch, 1, frames, 128\)"):
        model.encoder(torch.zeros(1, 1, 128, 64))
    with pytest.raises(ValueError, match="divisible by encoder.num_heads"):
        EncoderConfig(embed_dim=30, num_heads=4).validate()


def test_the_model_declares_which_parameters_skip_weight_decay():
    model = BootstrapPretrainer(tiny_config())
    no_decay = model.no_weight_decay()
    trained = dict(model.named_parameters())
    assert no_decay <= set(trained) and not any(n.startswith("teacher.") for n in no_decay)
    for name, param in trained.items():
        if name.startswith("teacher."):
            continue
        expected = param.dim() == 1 or name == "encoder.cls_token"  # norms, biases, CLS
        assert (name in no_decay) == expected, name
    assert "encoder.cls_token" in no_decay and "encoder.blocks.0.attn.qkv.weight" not in no_decay
    assert model.encoder.layer_depth("blocks.1.mlp.fc1.weight") == 2 and model.encoder.layer_depth("cls_token") == 0
