import json

import numpy as np
import pytest
import torch

from sslam_plugin.checkpoints.official_names import pretrainer_from_official
from sslam_plugin.masking import inverse_block_mask
from sslam_plugin.mixing import MixingConfig
from sslam_plugin.models.source_retention import MixingPlan, SourceRetentionPretrainer, source_retention_targets

from conftest import golden_config, tiny_config

TERMS = {"utterance", "patch", "utterance_mixed", "patch_mixed", "source_retention"}


def make_batch(clips, frames=128, clones=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    fbank = torch.randn(clips, 1, frames, 128, generator=g)
    grid = (frames // 16, 8)
    masks = [inverse_block_mask(grid, clones, rng=np.random.default_rng([seed, i])) for i in range(clips)]
    return fbank, torch.from_numpy(np.concatenate(masks))


def model(cfg=None, **mixing):
    torch.manual_seed(0)
    mix = dict(enabled=True, unmixed_window_frames=32)
    mix.update(mixing)
    return SourceRetentionPretrainer(cfg or tiny_config(utterance_target_layers=1), MixingConfig(**mix))


@pytest.fixture(scope="module")
def golden_step():
    from conftest import GOLDEN, GOLDEN_STAGE2, require_reference

    ckpt = torch.load(require_reference(GOLDEN) / "official_eat_tiny_checkpoint.pt", map_location="cpu", weights_only=False)
    ref = require_reference(GOLDEN_STAGE2)
    cfg = golden_config()
    cfg.utterance_target_layers = 1
    cfg.decoder.mask_noise_std = 0.0
    net = SourceRetentionPretrainer(cfg, MixingConfig(enabled=True))
    net.load_state_dict(pretrainer_from_official(ckpt["model"]), strict=False)
    fbank = torch.from_numpy(np.load(ref / "stage2_input_fbank.npy"))
    mask = torch.from_numpy(np.load(ref / "stage2_masks.npy")).bool()
    expected = json.loads((ref / "stage2_expected.json").read_text())
    plan = MixingPlan(torch.tensor([3, 0, 1, 2]), torch.tensor([expected["unmixed_window_starts"]]), 240)
    return net.train(), fbank, mask, plan, expected, np.load(ref / "stage2_srl_target.npy")


def test_golden_stage2_losses(golden_step):
    net, fbank, mask, plan, expected, _ = golden_step
    assert plan.partners.tolist() == net.plan(4, 1024).partners.tolist()  # clip i with clip i-1
    with torch.no_grad():
        out = net(fbank, mask, plan=plan)
    assert int(out.sample_size) == expected["sample_size"]
    sums = expected["loss_sums"]
    ours = {
        "eat_cls_loss": out.losses["utterance"] + out.losses["utterance_mixed"],
        "eat_patch_loss": out.losses["patch"] + out.losses["patch_mixed"],
        "mix_patch_loss": out.losses["source_retention"] * expected["srl_weight_in_loss"],
    }
    for name, value in ours.items():
        assert abs(float(value) - sums[name]) / abs(sums[name]) < 1e-5, name


def test_golden_srl_targets(golden_step):
    net, fbank, mask, plan, _, srl_ref = golden_step
    both = torch.cat([fbank, net.mix(fbank, plan)])
    targets = net.targets(fbank, both, plan, net.unmixed_patches(plan, 1024, fbank.device))
    assert targets.source_retention.shape == srl_ref.shape == (4, 512, 192)
    assert np.abs(targets.source_retention.numpy() - srl_ref).max() < 1e-4


def test_srl_targets_by_hand():
    own = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)  # 2 clips, 4 patches, width 1
    unmixed = torch.tensor([[True, False, False, True]])
    partner = torch.tensor([[[10.0], [20.0]], [[30.0], [40.0]]])  # mixed-region targets of each clip's partner
    srl = source_retention_targets(own, partner, unmixed)
    expected = torch.tensor([[0.0, (1 + 10) / 2, (2 + 20) / 2, 3.0], [4.0, (5 + 30) / 2, (6 + 40) / 2, 7.0]])
    assert torch.equal(srl[..., 0], expected)


def test_partner_pass_is_rolled_and_drops_only_window_patches():
    net = model().eval()
    fbank, _ = make_batch(3)
    plan = MixingPlan(torch.tensor([2, 0, 1]), torch.tensor([[0]]), 32)
    nothing = torch.zeros(1, 64, dtype=torch.bool)
    dropped_nothing = net.partner_layers(fbank, plan, nothing)
    full = net.teacher_layers(fbank[plan.partners])
    for a, b in zip(dropped_nothing, full):
        assert torch.allclose(a, b, atol=1e-5)
    window = net.unmixed_patches(plan, 128, fbank.device)
    assert int(window.sum()) == 2 * 8  # two patch rows
    assert net.partner_layers(fbank, plan, window)[0].shape == (3, 64 - 16, 32)


def test_five_terms_are_finite_and_train_everything():
    net = model()
    fbank, mask = make_batch(3)
    out = net(fbank, mask)
    assert set(out.losses) == TERMS
    total = sum(out.losses.values())
    total.backward()
    assert all(torch.isfinite(v) and v > 0 for v in out.losses.values())
    for name, param in net.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert 0 < float(out.logs["mixed_fraction"]) < 1


def test_replayed_step_is_bit_identical():
    net = model()
    fbank, mask = make_batch(4)
    plan = net.plan(4, 128)
    a = net(fbank, mask, noise_generator=torch.Generator().manual_seed(3), plan=plan)
    b = net(fbank, mask, noise_generator=torch.Generator().manual_seed(3), plan=plan)
    for name in TERMS:
        assert torch.equal(a.losses[name], b.losses[name]), name


def test_draws_are_a_function_of_the_given_generator_and_nothing_is_saved():
    net = model(partner="derangement", windows_per="clip")
    net.plan(5, 128)  # the model's own generator moves; a given one is independent of it
    expected = net.plan(5, 128, torch.Generator().manual_seed(11))
    other = model(partner="derangement", windows_per="clip", seed=99)
    replay = other.plan(5, 128, torch.Generator().manual_seed(11))
    assert torch.equal(replay.windows, expected.windows) and torch.equal(replay.partners, expected.partners)
    assert expected.windows.shape == (5, 2)
    assert not any("generator" in k or "extra_state" in k for k in net.state_dict())
    fbank, mask = make_batch(4)
    a = net(fbank, mask, noise_generator=torch.Generator().manual_seed(3), mixing_generator=torch.Generator().manual_seed(5))
    other.load_state_dict(net.state_dict())
    b = other(fbank, mask, noise_generator=torch.Generator().manual_seed(3), mixing_generator=torch.Generator().manual_seed(5))
    for name in TERMS:
        assert torch.equal(a.losses[name], b.losses[name]), name


@pytest.mark.parametrize(
    "clips, frames, encoder",
    [(1, 128, {}), (3, 128, {}), (2, 512, {}), (3, 64, {"embed_dim": 48, "depth": 3, "num_heads": 3})],
)
def test_odd_shapes(clips, frames, encoder):
    cfg = tiny_config(utterance_target_layers=1, encoder=encoder, decoder={"dim": 48 if encoder else 32})
    net = model(cfg, unmixed_window_frames=240)  # 2 x 240 frames: shrunk to fit short clips
    fbank, mask = make_batch(clips, frames)
    out = net(fbank, mask)
    assert set(out.losses) == TERMS
    assert all(torch.isfinite(v) for v in out.losses.values())
    if clips == 1:  # no partner: mixed terms are zero, the rest trains
        assert out.losses["source_retention"].item() == 0.0 and out.logs["mixed_fraction"].item() == 0.0
    else:
        assert float(out.logs["mixed_fraction"]) > 0


@pytest.mark.parametrize("operation, partner", [("mean", "derangement"), ("max", "previous")])
def test_options_run(operation, partner):
    """Each option does what it names: the partner rule, per-clip windows, and the mixing operation
    (checked frame by frame against a hand-built mixture)."""
    net = model(operation=operation, partner=partner, windows_per="clip")
    fbank, mask = make_batch(4)
    plan = net.plan(4, 128, torch.Generator().manual_seed(3))
    partners = plan.partners.tolist()
    if partner == "previous":
        assert partners == [3, 0, 1, 2]
    else:
        assert sorted(partners) == [0, 1, 2, 3] and all(p != i for i, p in enumerate(partners))
    assert plan.windows.shape[0] == 4  # one set of unmixed windows per clip
    mixed = net.mix(fbank, plan)
    mean, std = net.fbank.norm_mean, net.fbank.norm_std
    for i, p in enumerate(partners):
        kept = torch.zeros(128, dtype=torch.bool)
        for start in plan.windows[i].tolist():
            kept[start : start + plan.window_frames] = True
        a, b = fbank[i, 0], fbank[p, 0]
        if operation == "max":
            expected = torch.maximum(a, b)
        else:  # the mean of the two power spectra, back in the normalised log domain
            power = (torch.exp(a * 2 * std + mean) + torch.exp(b * 2 * std + mean)) / 2
            expected = (torch.log(power) - mean) / (2 * std)
        assert torch.equal(mixed[i, 0, kept], a[kept])
        torch.testing.assert_close(mixed[i, 0, ~kept], expected[~kept], rtol=1e-5, atol=1e-5)
    out = net(fbank, mask, plan=plan)
    assert float(out.logs["mixed_fraction"]) > 0


@pytest.mark.parametrize(
    "switches, terms",
    [
        ({"source_retention": False}, TERMS - {"source_retention"}),  # MB-UA-PMA
        ({"source_retention": False, "unmixed_student": False}, {"utterance_mixed", "patch_mixed"}),  # MB-PMA
        ({"unmixed_student": False}, {"utterance_mixed", "patch_mixed", "source_retention"}),
    ],
)
def test_variant_switches_drop_terms_and_keep_the_others_equal(switches, terms):
    """The Table 3 switches only remove terms: what remains equals the full model's term
    (decoder noise off, so a shorter student batch draws nothing different)."""
    cfg = tiny_config(utterance_target_layers=1, decoder={"mask_noise_std": 0.0})
    full, variant = model(cfg), model(cfg, **switches)
    variant.load_state_dict(full.state_dict())
    fbank, mask = make_batch(3)
    plan = full.plan(3, 128, torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = full(fbank, mask, plan=plan), variant(fbank, mask, plan=plan)
    assert set(b.losses) == terms == set(variant.loss_names())
    # mixtures only: the student batch (and sample_size) is half; the utterance terms scale with it
    own = switches.get("unmixed_student", True)
    assert int(b.sample_size) == int(mask.sum()) * (2 if own else 1) and int(a.sample_size) == 2 * int(mask.sum())
    for name in terms:
        scale = 1.0 if own or not name.startswith("utterance") else 0.5
        assert torch.allclose(b.losses[name], a.losses[name] * scale, rtol=1e-4, atol=1e-6), name
    single = variant(*make_batch(1))  # a batch without partner returns the same names
    assert set(single.losses) == terms
