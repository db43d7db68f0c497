"""Checkpoint conversion: formats, exports, round trips, safe loading and clear errors."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from sslam_plugin.checkpoints import (
    FINETUNED,
    PRETRAINING,
    CheckpointError,
    CorruptCheckpointError,
    UnknownCheckpointError,
    UntrustedCheckpointError,
    detect_format,
    export_from_checkpoint,
    fairseq_checkpoint_from_export,
    load_any,
    load_checkpoint_file,
    load_export,
    read_label_csv,
    save_export,
    save_fairseq_checkpoint,
)

from export_helpers import (
    HIDE_FAIRSEQ,
    encoder_tensors,
    finetuned_checkpoint,
    load_official,
    run_python,
    script,
    tiny_pretraining_checkpoint,
)


@pytest.fixture(scope="module")
def official():
    from conftest import GOLDEN, require_reference

    return load_official(require_reference(GOLDEN))


def assert_same_tensors(a, b):
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


# --------------------------------------------------------------- detection
def test_official_checkpoint_loads_safely_and_is_detected(golden_dir, official):
    ckpt = load_checkpoint_file(golden_dir / "official_eat_tiny_checkpoint.pt")  # weights_only, no trust needed
    fmt = detect_format(ckpt)
    assert fmt.kind == PRETRAINING and fmt.model_name == "data2vec_multi"
    export = export_from_checkpoint(ckpt)
    enc = export.encoder
    assert (enc.embed_dim, enc.depth, enc.num_heads, enc.patch_size, enc.max_time_patches) == (192, 2, 3, 16, 768)
    assert export.frontend.target_length == 1024 and export.frontend.norm_mean == -4.268
    assert export.head is None and export.source["num_updates"] == 2
    assert not any("decoder" in k for k in export.state)


def test_convert_cli_writes_export(tmp_path, golden_dir):
    out = tmp_path / "export"
    result = run_python(["scripts/convert_checkpoint.py", str(golden_dir / "official_eat_tiny_checkpoint.pt"), str(out)])
    assert result.returncode == 0, result.stderr
    assert "wrote export" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "sslam-encoder-export" and config["encoder"]["num_heads"] == 3
    assert config["frontend"]["sample_rate"] == 16000 and config["head"] is None
    assert config["weights"] == "student" and config["dtype"] == "float32"
    assert convert([str(golden_dir / "official_eat_tiny_checkpoint.pt"), str(out)]) == 1  # exists


def convert(argv):
    """scripts/convert_checkpoint.py in-process: its exit status."""
    return script("convert_checkpoint").main(argv)


# ------------------------------------------------- golden, fairseq hidden
GOLDEN_WITHOUT_FAIRSEQ = HIDE_FAIRSEQ + """
import numpy as np
from pathlib import Path
from sslam_plugin import load_encoder
from sslam_plugin.data import load_audio
from sslam_plugin.checkpoints import load_checkpoint_as_export, save_export
golden, export = Path(sys.argv[1]), sys.argv[2]
save_export(load_checkpoint_as_export(golden / "official_eat_tiny_checkpoint.pt"), export)
encoder = load_encoder(export)
for clip in ("clip_16k_6s", "clip_32k_11s"):
    waveform, rate = load_audio(golden / f"{clip}.wav")
    feats = encoder(waveform, rate)[0].numpy()
    ref = np.load(golden / f"{clip}.features.npy")
    assert feats.shape == ref.shape == (513, 192), feats.shape
    diff = float(np.abs(feats - ref).max())
    assert diff < 1e-4, (clip, diff)
    print(clip, diff)
assert not any(m.split(".")[0] in ("fairseq", "omegaconf") for m in sys.modules)
print("OK")
"""


def test_golden_converts_loads_and_reproduces_features_without_fairseq(tmp_path, golden_dir):
    result = run_python(["-c", GOLDEN_WITHOUT_FAIRSEQ, str(golden_dir), str(tmp_path / "export")])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK")


def test_checkpoint_loads_directly_and_reproduces_features(golden_dir):
    from sslam_plugin import load_encoder
    from sslam_plugin.data import load_audio

    encoder = load_encoder(golden_dir / "official_eat_tiny_checkpoint.pt")
    waveform, rate = load_audio(golden_dir / "clip_32k_11s.wav")
    ref = np.load(golden_dir / "clip_32k_11s.features.npy")
    assert np.abs(encoder(waveform, rate)[0].numpy() - ref).max() < 1e-4


# --------------------------------------------------------------- round trips
def test_round_trip_fairseq_export_fairseq_student(tmp_path, golden_dir, official):
    export_dir, back = tmp_path / "export", tmp_path / "back.pt"
    assert convert([str(golden_dir / "official_eat_tiny_checkpoint.pt"), str(export_dir)]) == 0
    assert convert([str(export_dir), str(back)]) == 0
    ckpt = torch.load(back, map_location="cpu", weights_only=True)  # safe to load
    assert_same_tensors(encoder_tensors(ckpt["model"]), encoder_tensors(official["model"]))
    assert_same_tensors(encoder_tensors(ckpt["model"], teacher=True), encoder_tensors(official["model"]))
    assert ckpt["cfg"]["model"]["_name"] == "sslam_pretraining"
    assert ckpt["cfg"]["model"]["encoder"]["num_heads"] == 3
    assert ckpt["cfg"]["task"]["target_length"] == 1024
    # and it converts again to the same export
    assert_same_tensors(load_any(back).state, load_export(export_dir).state)


def test_round_trip_teacher(tmp_path, official):
    export = export_from_checkpoint(official, teacher=True)
    assert export.weights == "teacher"
    save_export(export, tmp_path / "teacher")
    back = fairseq_checkpoint_from_export(load_export(tmp_path / "teacher"))
    assert_same_tensors(encoder_tensors(back["model"]), encoder_tensors(official["model"], teacher=True))
    assert not torch.equal(back["model"]["blocks.0.attn.qkv.weight"], official["model"]["blocks.0.attn.qkv.weight"])


@pytest.mark.parametrize("omegaconf_cfg", [False, True])
def test_our_stage2_checkpoint_round_trips(tmp_path, omegaconf_cfg):
    ckpt = tiny_pretraining_checkpoint(omegaconf_cfg=omegaconf_cfg, stage2=True)
    path = tmp_path / "checkpoint_last.pt"
    torch.save(ckpt, path)
    if omegaconf_cfg:
        # an omegaconf cfg needs the full unpickler: refused unless trusted
        with pytest.raises(UntrustedCheckpointError, match="--trust-checkpoint"):
            load_checkpoint_file(path)
    for teacher in (False, True):
        export = load_any(path, trust=omegaconf_cfg, teacher=teacher)
        assert export.encoder.num_heads == 2 and export.encoder.embed_dim == 32
        assert export.frontend.target_length == 128 and export.frontend.norm_mean == -5.0
        save_export(export, tmp_path / "export")
        save_fairseq_checkpoint(load_export(tmp_path / "export"), tmp_path / "back.pt")
        back = torch.load(tmp_path / "back.pt", map_location="cpu", weights_only=True)
        assert_same_tensors(encoder_tensors(back["model"]), encoder_tensors(ckpt["model"], teacher=teacher))


def test_written_checkpoint_loads_with_fairseq_loader(tmp_path):
    pytest.importorskip("fairseq")
    from fairseq import checkpoint_utils

    export = load_any_tiny(tmp_path)
    path = save_fairseq_checkpoint(export, tmp_path / "for_finetuning.pt")
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert state["cfg"].model.encoder.num_heads == 2
    assert state["cfg"].task.target_length == 128
    assert "modality_encoders.IMAGE.local_encoder.proj.weight" in state["model"]


def load_any_tiny(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_pretraining_checkpoint(), path)
    return load_any(path)


def test_dtype_option(tmp_path, official):
    save_export(export_from_checkpoint(official), tmp_path / "half", dtype="float16")
    half = load_export(tmp_path / "half")
    assert all(v.dtype == torch.float16 for v in half.state.values())
    assert json.loads((tmp_path / "half" / "config.json").read_text())["dtype"] == "float16"
    full = export_from_checkpoint(official).state
    for key, value in half.state.items():
        assert torch.allclose(value.float(), full[key], rtol=1e-3, atol=1e-4), key


# ------------------------------------------------------------ fine-tuned
def test_finetuned_checkpoint_exports_head_and_labels(tmp_path, official):
    path = tmp_path / "finetuned.pt"
    torch.save(finetuned_checkpoint(official, prediction_mode="MEAN_POOLING"), path)
    ckpt = load_checkpoint_file(path)
    assert detect_format(ckpt).kind == FINETUNED
    export = export_from_checkpoint(ckpt, source=str(path))
    assert export.encoder.num_heads == 3  # from pretrained_model_args
    assert export.head.num_classes == 6 and export.head.pooling == "mean"
    assert export.head.fc_norm and export.head.activation == "sigmoid"
    assert export.labels[2].id == "/m/002" and export.labels[2].name == "Sound 2, kind C"
    save_export(export, tmp_path / "export")
    assert (tmp_path / "export" / "labels.json").is_file()
    loaded = load_export(tmp_path / "export")
    assert loaded.labels == export.labels and loaded.head == export.head
    assert_same_tensors(loaded.state, export.state)
    # the encoder tensors are the golden ones
    assert_same_tensors(loaded.encoder_state, export_from_checkpoint(official).encoder_state)
    with pytest.raises(CheckpointError, match="no EMA teacher"):
        export_from_checkpoint(ckpt, teacher=True)


def test_finetuned_without_labels_uses_csv_or_class_names(tmp_path, official):
    ckpt = finetuned_checkpoint(official, num_classes=3, fc_norm=False, labels=False)
    export = export_from_checkpoint(ckpt)
    assert [l.name for l in export.labels] == ["class_0", "class_1", "class_2"] and not export.head.fc_norm
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text('0,/m/a,Speech\n1,/m/b,"Dog, bark"\n2,/m/c,Music\n')
    export = export_from_checkpoint(ckpt, labels_csv=csv_path)
    assert [l.name for l in export.labels] == ["Speech", "Dog, bark", "Music"]
    csv_path.write_text("0,/m/a,Speech\n")
    with pytest.raises(CheckpointError, match="1 labels but the head has 3 classes"):
        export_from_checkpoint(ckpt, labels_csv=csv_path)
    assert len(read_label_csv(csv_path)) == 1


# ---------------------------------------------------------------- errors
def test_truncated_checkpoint_gives_clear_error(tmp_path, golden_dir, capsys):
    data = (golden_dir / "official_eat_tiny_checkpoint.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="a truncated PyTorch checkpoint .* the end of the archive is missing"):
        load_checkpoint_file(path)
    assert convert([str(path), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "truncated.pt: a truncated PyTorch checkpoint" in err


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10])
def test_garbage_file_gives_clear_error(tmp_path, content):
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match="garbage.pt"):
        load_checkpoint_file(path)


def test_corrupted_export_gives_clear_error(tmp_path, official):
    save_export(export_from_checkpoint(official), tmp_path / "export")
    weights = tmp_path / "export" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CorruptCheckpointError, match="model.safetensors"):
        load_export(tmp_path / "export")


def test_checkpoint_of_another_model_lists_its_keys(tmp_path, capsys):
    other = {
        "cfg": {"model": {"_name": "transformer"}},
        "model": {"encoder.layers.0.fc1.weight": torch.zeros(4, 4), "decoder.embed_tokens.weight": torch.zeros(4, 4)},
    }
    path = tmp_path / "other.pt"
    torch.save(other, path)
    with pytest.raises(UnknownCheckpointError, match="encoder.layers.0.fc1.weight") as info:
        load_any(path)
    assert "other.pt" in str(info.value) and "decoder.embed_tokens.weight" in str(info.value)
    assert convert([str(path), str(tmp_path / "out")]) == 1
    assert "encoder.layers.0.fc1.weight" in capsys.readouterr().err
    with pytest.raises(UnknownCheckpointError, match="top-level keys"):
        export_from_checkpoint({"state_dict": {}})


def test_unknown_keys_in_known_layout_are_listed(official):
    ckpt = dict(official)
    ckpt["model"] = dict(official["model"], **{"modality_encoders.AUDIO.extra": torch.zeros(1)})
    with pytest.raises(UnknownCheckpointError, match="modality_encoders.AUDIO.extra"):
        export_from_checkpoint(ckpt)
    ft = finetuned_checkpoint(official)
    ft["model"]["model.something_new.weight"] = torch.zeros(1)
    with pytest.raises(UnknownCheckpointError, match="model.something_new.weight"):
        export_from_checkpoint(ft)


class Custom:  # any class PyTorch's safe loader does not know
    pass


def test_untrusted_objects_are_refused(tmp_path, official):
    ckpt = dict(official, criterion=Custom())
    path = tmp_path / "custom.pt"
    torch.save(ckpt, path)
    with pytest.raises(UntrustedCheckpointError, match="Custom") as info:
        load_checkpoint_file(path)
    assert "can run code" in str(info.value)


def test_argparse_args_are_allowed_without_trust(tmp_path, official):
    path = tmp_path / "with_args.pt"
    torch.save(dict(official, args=argparse.Namespace(arch="data2vec_multi", num_heads=3)), path)
    assert load_checkpoint_file(path)["args"].arch == "data2vec_multi"


def test_missing_num_heads_is_guessed_or_given(official):
    ckpt = {"model": official["model"], "cfg": None}
    assert export_from_checkpoint(ckpt).encoder.num_heads == 3  # 192 / 64, with a warning
    assert export_from_checkpoint(ckpt, num_heads=6).encoder.num_heads == 6
    with pytest.raises(CheckpointError, match="divisible"):
        export_from_checkpoint(ckpt, num_heads=5)
