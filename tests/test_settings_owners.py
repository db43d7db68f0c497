"""One owner per setting: the fbank settings are declared once and composed into both tasks, the
mixing takes the task's normalisation instead of a copy, command-line defaults are read from their
owners, model configs reach the models as their dataclasses, and no recipe states a key twice."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from sslam_plugin.features import FbankConfig, FbankSettings
from sslam_plugin.mixing import MixingConfig, partial_mix
from sslam_plugin.models import DecoderConfig, EncoderConfig, PretrainingConfig
from sslam_plugin.models.source_retention import SourceRetentionPretrainer

REPO = Path(__file__).resolve().parents[1]
FBANK_FIELDS = {f.name: f for f in dataclasses.fields(FbankSettings)}
TINY = PretrainingConfig(
    encoder=EncoderConfig(embed_dim=8, depth=1, num_heads=1, patch_size=16, num_mel_bins=32, max_time_patches=8),
    decoder=DecoderConfig(dim=8, layers=1, groups=1),
    clone_batch=1,
    average_top_k_layers=1,
)


def task_configs():
    pytest.importorskip("fairseq")
    from sslam_plugin.training.classification_task import ClassificationTaskConfig
    from sslam_plugin.training.task import SSLAMPretrainingTaskConfig

    return [SSLAMPretrainingTaskConfig, ClassificationTaskConfig]


def test_fbank_settings_are_declared_once_and_composed_into_both_tasks():
    assert set(FBANK_FIELDS) == {"target_length", "num_mel_bins", "norm_mean", "norm_std"}
    assert issubclass(FbankConfig, FbankSettings)
    for cls in task_configs():
        assert issubclass(cls, FbankSettings)
        own = set(vars(cls).get("__annotations__", {}))
        assert not own & set(FBANK_FIELDS), f"{cls.__name__} declares {own & set(FBANK_FIELDS)} again"
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, core in FBANK_FIELDS.items():  # the same field: default and help text
            assert (fields[name].default, dict(fields[name].metadata)) == (core.default, dict(core.metadata))


def test_task_front_end_is_built_from_the_composed_settings():
    from omegaconf import OmegaConf

    from sslam_plugin.features import fbank_config_from

    for cls in task_configs():
        cfg = OmegaConf.merge(OmegaConf.structured(cls), {"target_length": 512, "norm_mean": -6.0, "norm_std": 5.0})
        assert fbank_config_from(cfg) == FbankConfig(target_length=512, norm_mean=-6.0, norm_std=5.0)


class _NoDuplicateKeys(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise yaml.constructor.ConstructorError(None, None, f"keys {repeated} repeated", node.start_mark)
        return super().construct_mapping(node, deep)


def test_the_duplicate_key_loader_catches_a_repeated_key():
    with pytest.raises(yaml.constructor.ConstructorError, match=r"\['num_mel_bins'\] repeated"):
        yaml.load("task:\n  num_mel_bins: 128\n  num_mel_bins: 64\n", Loader=_NoDuplicateKeys)


def test_no_recipe_states_a_key_twice():
    recipes = sorted((REPO / "config").rglob("*.yaml"))
    assert len(recipes) > 10
    for path in recipes:
        yaml.load(path.read_text(encoding="utf-8"), Loader=_NoDuplicateKeys)  # raises naming the line


def test_pretraining_encoder_mel_bins_follow_the_task():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "config" / "pretrain"), version_base=None):
        cfg = compose("eat_stage1", overrides=["task.data=/unused", "task.num_mel_bins=64"])
    assert cfg.model.encoder.num_mel_bins == 64


def test_mean_mixing_undoes_the_front_ends_normalisation_not_a_copy():
    assert not {"norm_mean", "norm_std"} & {f.name for f in dataclasses.fields(MixingConfig)}
    torch.manual_seed(0)
    clips = torch.randn(2, 1, 32, 32)
    mixing = MixingConfig(enabled=True, num_unmixed_windows=0, operation="mean")
    for fbank in (FbankConfig(), FbankConfig(norm_mean=-6.627, norm_std=5.359)):
        model = SourceRetentionPretrainer(TINY, mixing, fbank)
        plan = model.plan(2, 32, torch.Generator().manual_seed(0))
        mixed = model.mix(clips, plan)
        # by hand: back to log power, average the powers, normalise again
        scale = 2 * fbank.norm_std
        power = (clips * scale + fbank.norm_mean).exp()
        expected = (((power + power[plan.partners]) / 2).log() - fbank.norm_mean) / scale
        assert torch.allclose(mixed, expected, atol=1e-5)
    assert not torch.allclose(
        partial_mix(clips, clips.roll(1, 0), torch.zeros(1, 32, dtype=torch.bool), "mean", -4.268, 4.569),
        partial_mix(clips, clips.roll(1, 0), torch.zeros(1, 32, dtype=torch.bool), "mean", -6.627, 5.359),
    )


def test_pretraining_model_takes_the_tasks_front_end_and_its_config_as_dataclasses():
    pytest.importorskip("fairseq")
    from omegaconf import OmegaConf

    from sslam_plugin.training.model import SSLAMPretrainingModel, SSLAMPretrainingModelConfig

    cfg = OmegaConf.merge(
        OmegaConf.structured(SSLAMPretrainingModelConfig),
        {"encoder": dataclasses.asdict(TINY.encoder), "decoder": dataclasses.asdict(TINY.decoder),
         "clone_batch": 1, "average_top_k_layers": 1, "mixing": {"enabled": True, "operation": "mean"}},
    )
    task = SimpleNamespace(fbank_config=lambda: FbankConfig(norm_mean=-6.0, norm_std=5.0))
    pretrainer = SSLAMPretrainingModel.build_model(cfg, task).pretrainer
    assert isinstance(pretrainer.cfg, SSLAMPretrainingModelConfig)
    assert type(pretrainer.cfg.encoder) is EncoderConfig and pretrainer.cfg.encoder.embed_dim == 8
    assert type(pretrainer.mixing) is MixingConfig and pretrainer.mixing.operation == "mean"
    assert (pretrainer.fbank.norm_mean, pretrainer.fbank.norm_std) == (-6.0, 5.0)


def test_classifier_model_config_arrives_as_its_dataclass():
    pytest.importorskip("fairseq")
    from omegaconf import OmegaConf

    from sslam_plugin.training.classifier_model import ClassifierModelConfig, SSLAMClassifierModel

    cfg = OmegaConf.merge(OmegaConf.structured(ClassifierModelConfig), {"encoder": dataclasses.asdict(TINY.encoder)})
    model = SSLAMClassifierModel.build_model(cfg, SimpleNamespace(num_classes=3, labels=None))
    assert isinstance(model.cfg, ClassifierModelConfig) and type(model.cfg.encoder) is EncoderConfig
    assert model.classifier.encoder.cfg.embed_dim == 8 and model.classifier.encoder.cfg.end_drop_path == 0.1
    with pytest.raises(Exception, match="embed_dims"):  # a misspelled key is refused, not dropped
        SSLAMClassifierModel.build_model(
            OmegaConf.create({"encoder": {"embed_dims": 8}}), SimpleNamespace(num_classes=3, labels=None)
        )


def test_plot_mixture_defaults_are_read_from_their_owners(monkeypatch):
    from sslam_plugin.cli import plot_mixture

    args = plot_mixture.build_parser().parse_args(["clips.tsv"])
    mixing, fbank = MixingConfig(), FbankConfig()
    assert (args.window_frames, args.num_windows, args.operation, args.mixing_seed) == (
        mixing.unmixed_window_frames, mixing.num_unmixed_windows, mixing.operation, mixing.seed
    )
    assert (args.target_length, args.norm_mean, args.norm_std) == (fbank.target_length, fbank.norm_mean, fbank.norm_std)

    @dataclasses.dataclass
    class OtherMixing(MixingConfig):
        unmixed_window_frames: int = 320

    monkeypatch.setattr(plot_mixture, "MixingConfig", OtherMixing)
    assert plot_mixture.build_parser().parse_args(["clips.tsv"]).window_frames == 320
    assert math.isclose(args.norm_std, 4.569)
