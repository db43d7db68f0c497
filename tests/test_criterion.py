import math

import pytest
import torch

pytest.importorskip("fairseq")

from fairseq import metrics  # noqa: E402

from sslam_plugin.training.criterion import SSLAMWeightedLossesConfig, SSLAMWeightedLossesCriterion  # noqa: E402


class FakeModel(torch.nn.Module):
    def forward(self, **unused):
        return {
            "losses": {"patch": torch.tensor(10.0), "source_retention": torch.tensor(3.0)},
            "sample_size": torch.tensor(4),
            "logs": {"pred_var": torch.tensor(0.5), "mixed_fraction": torch.tensor(0.25)},
        }


def criterion(**weights):
    cfg = SSLAMWeightedLossesConfig(loss_weights=weights, log_keys=["pred_var", "mixed_fraction"])
    return SSLAMWeightedLossesCriterion(cfg, task=None)


def sample():
    return {"id": torch.arange(2), "net_input": {}}


def test_weighted_sum_and_per_term_logs():
    loss, sample_size, log = criterion(source_retention=2.0)(FakeModel(), sample())
    assert float(loss) == 10.0 + 2.0 * 3.0
    assert int(sample_size) == 4
    assert log["loss_patch"] == 10.0 and log["loss_source_retention"] == 6.0
    assert log["pred_var"] == 0.5 and log["mixed_fraction"] == 0.25


def test_reduce_reports_terms_per_masked_patch_in_bits():
    _, _, log = criterion()(FakeModel(), sample())
    with metrics.aggregate() as agg:
        SSLAMWeightedLossesCriterion.reduce_metrics([log, log])
        values = agg.get_smoothed_values()
    assert values["loss_patch"] == pytest.approx(round(20.0 / 8 / math.log(2), 4))
    assert values["pred_var"] == pytest.approx(0.5)


def test_utterance_terms_are_logged_per_clip_whatever_the_batch_size():
    """The utterance term is a sum over clips times sample_size; its logged figure must not follow the batch."""

    def model_for(clips: int):
        class Model(torch.nn.Module):
            def forward(self, **unused):
                sample_size = 6.0 * clips  # masked patches grow with the batch
                per_clip = 0.75  # the same regression error in every clip
                return {"losses": {"patch": torch.tensor(2.0 * sample_size),
                                   "utterance": torch.tensor(per_clip * clips * sample_size)},
                        "sample_size": torch.tensor(sample_size), "logs": {}}
        return Model()

    figures = []
    for clips in (2, 5):
        loss, _, log = criterion(utterance=2.0)(model_for(clips), {"id": torch.arange(clips), "net_input": {}})
        assert float(loss) == 2.0 * 6 * clips + 2.0 * 0.75 * clips * 6 * clips  # the total is untouched
        with metrics.aggregate() as agg:
            SSLAMWeightedLossesCriterion.reduce_metrics([log])
            figures.append(agg.get_smoothed_values())
    expected = round(2.0 * 0.75 / math.log(2), 4)  # weight x per-clip error, in bits
    assert [f["loss_utterance"] for f in figures] == [pytest.approx(expected)] * 2
    assert [f["loss_patch"] for f in figures] == [pytest.approx(round(2.0 / math.log(2), 4))] * 2


def test_unknown_weight_names_the_key():
    with pytest.raises(KeyError, match="utterance_mixed"):
        criterion(utterance_mixed=1.0)(FakeModel(), sample())


def test_weights_under_the_old_frame_names_still_apply(caplog):
    class Model(torch.nn.Module):
        def forward(self, **unused):
            return {"losses": {"patch": torch.tensor(2.0), "patch_mixed": torch.tensor(3.0)},
                    "sample_size": torch.tensor(1), "logs": {}}

    with caplog.at_level("WARNING"):
        loss, _, log = criterion(frame=0.5, frame_mixed=2.0)(Model(), sample())
    assert float(loss) == 0.5 * 2.0 + 2.0 * 3.0
    assert log["loss_patch"] == 1.0 and log["loss_patch_mixed"] == 6.0
    assert "criterion.loss_weights.frame: 'frame' is the old name of 'patch'" in caplog.text


def test_logged_numbers_are_those_of_item_read_in_one_copy():
    from sslam_plugin.training.criterion import scalars_to_floats

    values = [torch.tensor(2**40 + 1), torch.tensor(0.1), torch.tensor(1 / 3, dtype=torch.float32), 0.7,
              torch.tensor(3.5, dtype=torch.bfloat16)]
    assert scalars_to_floats(values, torch.tensor(0.0)) == [2**40 + 1, float(torch.tensor(0.1)),
                                                            torch.tensor(1 / 3).item(), 0.7, 3.5]
