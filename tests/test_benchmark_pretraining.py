"""The fast pre-training step equals the plain one, and the benchmark's FLOP count and MFU are right."""

import copy
import json

import numpy as np
import pytest
import torch

from sslam_plugin.cli import benchmark_measures as measures
from sslam_plugin.cli import benchmark_pretraining as bench
from sslam_plugin.masking import inverse_block_mask
from sslam_plugin.mixing import MixingConfig
from sslam_plugin.models import BootstrapPretrainer, DecoderConfig, EncoderConfig
from sslam_plugin.models.ema import EMATeacher
from sslam_plugin.models.flops import StepShape, step_flops
from sslam_plugin.models.mask_index import gather_from_clips, mask_index
from sslam_plugin.models.source_retention import SourceRetentionPretrainer

from conftest import tiny_config


def make_batch(clips=3, frames=128, clones=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    fbank = torch.randn(clips, 1, frames, 128, generator=g)
    masks = [inverse_block_mask((frames // 16, 8), clones, rng=np.random.default_rng([seed, i])) for i in range(clips)]
    mask = torch.from_numpy(np.concatenate(masks))
    assert mask.any() and (~mask).any()  # masks that actually mask something
    return fbank, mask


def plain_and_fast(stage, **mixing):
    torch.manual_seed(0)
    cfg = tiny_config(utterance_target_layers=None if stage == 1 else 1, fast_step=False)
    if stage == 1:
        plain = BootstrapPretrainer(cfg)
    else:
        plain = SourceRetentionPretrainer(cfg, MixingConfig(enabled=True, unmixed_window_frames=32, **mixing))
    fast = copy.deepcopy(plain)
    fast.cfg = copy.deepcopy(cfg)
    fast.cfg.fast_step = True
    return plain.train(), fast.train()


def one_step(model, fbank, mask):
    out = model(fbank, mask, torch.Generator().manual_seed(1), **(
        {"mixing_generator": torch.Generator().manual_seed(2)} if isinstance(model, SourceRetentionPretrainer) else {}
    ))
    (sum(out.losses.values()) / out.sample_size).backward()
    return out


@pytest.mark.parametrize(
    "stage, mixing",
    [(1, {}), (2, {}), (2, {"windows_per": "clip"}), (2, {"partner": "derangement"})],
)
def test_fast_step_gives_the_plain_losses_logs_and_gradients(stage, mixing):
    plain, fast = plain_and_fast(stage, **mixing)
    fbank, mask = make_batch()
    a, b = one_step(plain, fbank, mask), one_step(fast, fbank, mask)
    assert sorted(a.losses) == sorted(b.losses)
    for name in a.losses:  # the same elements gathered in the same order: equal, not just close
        assert torch.equal(a.losses[name], b.losses[name]), name
    for name in a.logs:
        assert torch.equal(a.logs[name], b.logs[name]), name
    assert int(a.sample_size) == int(b.sample_size)
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        if p.grad is None:
            assert q.grad is None, name
            continue
        assert torch.isfinite(q.grad).all(), name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_fast_teacher_update_is_the_plain_one():
    plain, fast = plain_and_fast(1)
    with torch.no_grad():
        for p in list(plain.encoder.parameters()) + list(fast.encoder.parameters()):
            p.add_(0.1)  # student away from the teacher, identically in both
    plain.ema_step(10)
    fast.ema_step(10)
    for a, b in zip(plain.teacher.parameters(), fast.teacher.parameters()):
        assert torch.equal(a, b)


def test_foreach_ema_casts_a_half_student_like_the_loop():
    student = torch.nn.Linear(4, 3).half()
    loop, foreach = EMATeacher(student), EMATeacher(student)
    with torch.no_grad():
        student.weight.add_(1.0)
    loop.update(student, 0.9)
    foreach.update(student, 0.9, foreach=True)
    assert foreach.encoder.weight.dtype == torch.float32
    assert torch.equal(loop.encoder.weight, foreach.encoder.weight)


def test_mask_index_lists_kept_and_masked_positions_in_order():
    mask = torch.tensor([[True, False, True, False], [False, True, True, False]])
    index = mask_index(mask)
    assert index.kept.tolist() == [[1, 3], [0, 3]]
    assert index.masked.tolist() == [[0, 2], [1, 2]]
    with pytest.raises(ValueError, match="same number"):
        mask_index(torch.tensor([[True, False], [False, False]]))


def test_gather_from_clips_equals_repeat_then_gather():
    x = torch.randn(2, 5, 3)
    index = torch.tensor([[0, 4], [1, 2], [3, 4]])
    with pytest.raises(ValueError, match="copies"):
        gather_from_clips(x, index)
    index = torch.tensor([[0, 4], [1, 2], [2, 3], [0, 1]])  # 2 clips x 2 copies
    repeated = x.repeat_interleave(2, dim=0)
    expected = torch.stack([repeated[n, index[n]] for n in range(4)])
    assert torch.equal(gather_from_clips(x, index), expected)


# ------------------------------------------------------------------ FLOPs, MFU
def test_step_flops_match_a_hand_count():
    enc = EncoderConfig(embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0)
    dec = DecoderConfig(dim=32, layers=2, groups=4, kernel_size=3)
    # 3 clips x 2 copies, 8 x 8 = 64 patches, 12 kept; stage 2: 6 student clips, 6 teacher, 3 partners of 40 patches
    shape = StepShape(student_clips=6, copies=2, kept=12, patches=64, teacher_clips=6, partner_clips=3, partner_patches=40)
    d, h = 32, 128

    def block(s):  # qkv + proj + mlp + (q k^T, attn v)
        return 2 * s * d * 3 * d + 2 * s * d * d + 2 * s * d * h * 2 + 2 * 2 * s * s * d

    embed = 2 * 64 * d * 256  # per clip
    student = 6 * embed + 12 * 2 * block(13) + 12 * (2 * 64 * 32 * 8 * 9 * 2 + 2 * 64 * 32 * 32)
    teacher = 6 * embed + 6 * 2 * block(65) + 3 * embed + 3 * 2 * block(41)
    flops = step_flops(enc, dec, shape)
    assert flops == {"student_forward": student, "teacher_forward": teacher, "total": 3 * student + teacher}


def test_step_shape_of_stage_2_counts_the_mixtures_and_partner_pass():
    model = SourceRetentionPretrainer(tiny_config(utterance_target_layers=1), MixingConfig(enabled=True, unmixed_window_frames=32))
    fbank, mask = make_batch(clips=3, frames=128, clones=2)
    shape = measures.step_shape(model, 3, 128, mask)
    kept = 64 - int(mask[0].sum())
    # two windows of 2 patch rows x 8 frequency patches are left out of the partner pass
    assert shape == StepShape(6, 2, kept, 64, 6, 3, 64 - 2 * 2 * 8)
    assert measures.step_shape(BootstrapPretrainer(tiny_config()), 3, 128, mask) == StepShape(3, 2, kept, 64, 3)


def test_peak_table_and_mfu():
    assert measures.peak_tflops("NVIDIA H200", torch.bfloat16) == 989.4
    assert measures.peak_tflops("NVIDIA H100 PCIe", torch.float16) == 756.0
    assert measures.peak_tflops("NVIDIA H100 80GB HBM3", torch.float32) == 66.9
    assert measures.peak_tflops("cpu", torch.float32) is None
    assert measures.peak_tflops("cpu", torch.float32, override=2.0) == 2.0
    assert measures.model_flops_utilisation(14.7e12, 0.052, 989.4) == pytest.approx(14.7 / 0.052 / 989.4)
    assert measures.model_flops_utilisation(1.0, 1.0, None) is None


def test_benchmark_runs_both_modes_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setitem(
        bench.SIZES, "test", dict(encoder=dict(embed_dim=32, depth=2, num_heads=2), decoder=dict(dim=32, layers=2))
    )
    out = tmp_path / "bench.json"
    argv = ["--size", "test", "--batch", "2", "--frames", "128", "--steps", "2", "--peak-tflops", "0.5",
            "--json", str(out), "--profile", str(tmp_path / "prof")]
    assert bench.main(argv) == 0
    results = json.loads(out.read_text())
    cases = [c for c in results["cases"] if "mode" in c]
    summaries = [c for c in results["cases"] if "compare" in c]
    assert {(c["stage"], c["mode"]) for c in cases} == {(1, "plain"), (1, "fast"), (2, "plain"), (2, "fast")}
    for case in cases:
        assert case["losses_finite"] and case["grads_finite"] and case["teacher_float32"]
        assert case["fairseq_speedups"] == (case["mode"] == "fast")  # plain: fairseq's own optimiser code
        assert len(case["step_ms_all"]) == 2
        # MFU is the shape-counted FLOPs over the median step time and the given peak
        model = bench.build("test", case["stage"], torch.device("cpu"))
        _, mask = bench.batch(2, 128, model.cfg.clone_batch, torch.device("cpu"), torch.float32)
        flops = step_flops(model.cfg.encoder, model.cfg.decoder, measures.step_shape(model, 2, 128, mask))["total"]
        assert case["tflop_per_step"] == round(flops / 1e12, 4)
        expected = flops / (np.median(case["step_ms_all"]) / 1000) / 0.5e12
        assert case["mfu"] == pytest.approx(expected, rel=2e-3, abs=1e-4)
        assert case["profile"]["forward"]["calls"] == 1
    for summary in summaries:
        assert summary["first_step_max_rel_diff"] == 0.0 and summary["same_loss_names"]
    assert sorted(p.name for p in (tmp_path / "prof").iterdir())[0].startswith("profile_stage1")


def test_teacher_target_error_under_autocast():
    """float32 leaves the targets unchanged; bf16 autocast moves them by bf16's round-off, not more."""
    torch.manual_seed(0)
    model = BootstrapPretrainer(tiny_config())
    fbank = torch.randn(2, 1, 64, 128)
    exact = measures.teacher_target_error(model, fbank, torch.float32)
    assert exact == {"patch": 0.0, "utterance": 0.0}
    low = measures.teacher_target_error(model, fbank, torch.bfloat16)
    # bf16 keeps 8 bits of mantissa (relative step 2**-8 = 0.004); a few blocks compound it
    assert 1e-4 < low["patch"] < 5e-2 and 1e-4 < low["utterance"] < 5e-2, low


@pytest.mark.parametrize("stage", [1, 2])
def test_compiled_modules_give_the_eager_losses_and_gradients(stage):
    """``compile_modules`` (torch.compile of the blocks and decoder) changes neither the losses, the
    gradients nor the checkpoint's parameter names; compiled kernels may reorder sums (round-off only)."""
    eager, _ = plain_and_fast(stage)
    eager.cfg.fast_step = True
    compiled = copy.deepcopy(eager)
    compiled.cfg = copy.deepcopy(eager.cfg)
    compiled.cfg.compile_modules = True
    compiled.compile_modules()
    assert list(compiled.state_dict()) == list(eager.state_dict())
    fbank, mask = make_batch()
    a, b = one_step(eager, fbank, mask), one_step(compiled, fbank, mask)
    assert sorted(a.losses) == sorted(b.losses)
    for name in a.losses:
        torch.testing.assert_close(b.losses[name], a.losses[name], rtol=1e-5, atol=1e-4, msg=name)
    grads = 0
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
            grads += 1
    assert grads > 20  # the encoder's and the decoder's parameters all received gradients


def test_compile_mode_is_checked():
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        tiny_config(compile_mode="fastest").validate()


def test_benchmark_records_a_failed_case_and_runs_the_others(tmp_path, monkeypatch):
    """Out of memory or a compiler error in one case leaves an error entry, not a lost run."""
    monkeypatch.setitem(
        bench.SIZES, "test", dict(encoder=dict(embed_dim=32, depth=2, num_heads=2), decoder=dict(dim=32, layers=2))
    )
    real_build = bench.build

    def build(*args, compile_modules=False, **kwargs):
        if compile_modules:
            raise RuntimeError("the compiler failed\nlong traceback")
        return real_build(*args, **kwargs)

    real_step = bench.Case._step

    def step(self, timed):
        if self.stage == 2 and self.mode == "fast" and self.updates == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        real_step(self, timed)

    monkeypatch.setattr(bench, "build", build)
    monkeypatch.setattr(bench.Case, "_step", step)
    out = tmp_path / "bench.json"
    argv = ["--size", "test", "--batch", "2", "--frames", "128", "--steps", "2", "--compile",
            "--no-teacher-accuracy", "--json", str(out)]
    assert bench.main(argv) == 0
    cases = {(c["stage"], c["mode"]): c for c in json.loads(out.read_text())["cases"] if "mode" in c}
    assert set(cases) == {(s, m) for s in (1, 2) for m in ("plain", "fast", "compiled")}
    assert cases[1, "compiled"]["error"] == "RuntimeError: the compiler failed"
    assert cases[2, "compiled"]["error"] == "RuntimeError: the compiler failed"
    assert cases[2, "fast"]["error"].startswith("OutOfMemoryError: CUDA out of memory")
    for ok in ((1, "plain"), (1, "fast"), (2, "plain")):
        assert "error" not in cases[ok] and len(cases[ok]["step_ms_all"]) == 2
    compared = [(c["stage"], c["compare"]) for c in json.loads(out.read_text())["cases"] if "compare" in c]
    assert compared == [(1, "fast vs plain")]  # nothing to compare where one side failed
