"""One vocabulary: every entry point takes the poolings and granularities of sslam_plugin.vocabulary,
maps the old names of its one legacy table, and refuses anything else with the same message."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from sslam_plugin import vocabulary
from sslam_plugin.checkpoints.export_format import HeadConfig
from sslam_plugin.clips import check_granularity
from sslam_plugin.features import FbankConfig
from sslam_plugin.hear import HearModel
from sslam_plugin.models.classifier import AudioClassifier
from sslam_plugin.models.encoder import EncoderConfig
from sslam_plugin.probe import ProbeConfig, random_encoder
from sslam_plugin.vocabulary import GRANULARITIES, LEGACY_NAMES, POOLINGS, parse_granularity, parse_pooling

TINY = EncoderConfig(embed_dim=8, depth=1, num_heads=1, patch_size=16, num_mel_bins=128, max_time_patches=8)


def _classifier_model(pooling: str) -> str:
    pytest.importorskip("fairseq")
    from sslam_plugin.training.classifier_model import ClassifierModelConfig, SSLAMClassifierModel

    model = SSLAMClassifierModel.build_model(
        ClassifierModelConfig(encoder=TINY, pooling=pooling), SimpleNamespace(num_classes=2, labels=None)
    )
    return model.classifier.pooling


def _extract_features_cli(pooling: str) -> str:
    from sslam_plugin.cli.extract_features import build_parser

    parser = build_parser()
    parser.error = lambda message: (_ for _ in ()).throw(ValueError(message))  # argparse would exit
    return parser.parse_args(["ckpt", "in", "out", "--utterance-pooling", pooling]).utterance_pooling


def _head(pooling: str) -> str:
    head = HeadConfig(num_classes=2, pooling=pooling)
    head.validate()
    return head.pooling


# every place a pooling name comes in, returning the name it settled on
POOLING_ENTRY_POINTS = {
    "AudioClassifier": lambda p: AudioClassifier(TINY, 2, pooling=p).pooling,
    "model.pooling": _classifier_model,
    "export head.pooling": _head,
    "extract_features(utterance_pooling)": lambda p: check_granularity("utterance", p)[1],
    "HEAR scene_pooling": lambda p: HearModel(random_encoder(TINY, FbankConfig(target_length=128)), scene_pooling=p).scene_pooling,
    "ProbeConfig.pooling": lambda p: ProbeConfig(pooling=p).pooling,
    "sslam-extract-features --utterance-pooling": _extract_features_cli,
}


@pytest.mark.parametrize("entry", sorted(POOLING_ENTRY_POINTS))
def test_every_entry_point_takes_the_poolings_of_the_one_type(entry):
    parse = POOLING_ENTRY_POINTS[entry]
    assert [parse(name) for name in POOLINGS] == list(POOLINGS)
    # the official names (fine-tuned checkpoints' prediction_mode) mean the same everywhere
    for old, new in LEGACY_NAMES["pooling"].items():
        assert parse(old) == new
    with pytest.raises(ValueError) as err:
        parse("max")
    assert re.search(r"must be one of cls, mean \(or CLS_TOKEN / MEAN_POOLING\), got 'max'", str(err.value))


def test_the_pooling_type_and_its_names_agree():
    assert set(POOLINGS) == set(vocabulary.Pooling.__args__)
    assert set(GRANULARITIES) == set(vocabulary.Granularity.__args__)
    assert parse_pooling("PredictionMode.MEAN_POOLING") == "mean"  # as some official configs write it


def _granularity_cli(name: str) -> str:
    from sslam_plugin.cli.extract_features import build_parser

    parser = build_parser()
    parser.error = lambda message: (_ for _ in ()).throw(ValueError(message))
    return parser.parse_args(["ckpt", "in", "out", "--granularity", name]).granularity


GRANULARITY_ENTRY_POINTS = {
    "extract_features(granularity)": lambda g: check_granularity(g, "cls")[0],
    "sslam-extract-features --granularity": _granularity_cli,
}


@pytest.mark.parametrize("entry", sorted(GRANULARITY_ENTRY_POINTS))
def test_old_granularity_names_come_from_the_one_legacy_table(entry, monkeypatch, caplog):
    parse = GRANULARITY_ENTRY_POINTS[entry]
    assert [parse(name) for name in GRANULARITIES] == list(GRANULARITIES)
    with caplog.at_level("WARNING"):
        assert parse("frame") == "patch"
    assert "'frame' is the old name of 'patch'" in caplog.text
    # a name added to the table is understood at once: no entry point keeps a table of its own
    monkeypatch.setitem(LEGACY_NAMES, "granularity", {**LEGACY_NAMES["granularity"], "tokens": "all"})
    assert parse("tokens") == "all"
    with pytest.raises(ValueError, match=r"must be one of patch, utterance, all, time \(or frame\), got 'frames'"):
        parse("frames")


def test_old_loss_term_names_come_from_the_one_legacy_table(monkeypatch):
    pytest.importorskip("fairseq")
    from sslam_plugin.training.criterion import SSLAMWeightedLossesConfig, SSLAMWeightedLossesCriterion

    monkeypatch.setitem(LEGACY_NAMES, "loss_term", {**LEGACY_NAMES["loss_term"], "srl": "source_retention"})
    criterion = SSLAMWeightedLossesCriterion(
        SSLAMWeightedLossesConfig(loss_weights={"frame": 0.5, "srl": 2.0, "utterance": 1.0}), task=None
    )
    assert criterion.loss_weights == {"patch": 0.5, "source_retention": 2.0, "utterance": 1.0}


def test_pooling_reads_the_tokens_it_names():
    tokens = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # (N, 1 + L, D)
    from sslam_plugin.models.classifier import pool

    assert torch.equal(pool(tokens, parse_pooling("CLS_TOKEN")), tokens[:, 0])
    assert torch.equal(pool(tokens, parse_pooling("MEAN")), tokens[:, 1:].mean(dim=1))
    assert parse_granularity("utterance") == "utterance"
