"""Frame targets, the frame head's time grid, decoding and scoring, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sslam_plugin.detection.decoding import decode, events_to_json, median_filter, median_window_frames, write_events_tsv
from sslam_plugin.detection.head import FrameDetector, linear_softmax_pool, rows_to_frames
from sslam_plugin.detection.scoring import event_metrics, psds_scores
from sslam_plugin.detection.strong_labels import Event
from sslam_plugin.detection.targets import FrameGrid, frame_targets, window_events
from sslam_plugin.models.encoder import EncoderConfig


# ------------------------------------------------------------------ targets
def test_frame_grid_states_the_time_resolution():
    grid = FrameGrid(window_frames=1024, hop=0.04)
    assert grid.row_seconds == pytest.approx(0.16) and grid.rows == 64
    assert grid.frames_per_row == 4 and grid.num_frames == 256 and grid.window_seconds == pytest.approx(10.24)
    with pytest.raises(ValueError, match="must divide one patch row"):
        FrameGrid(window_frames=1024, hop=0.05)
    with pytest.raises(ValueError, match="not a positive multiple of the patch size"):
        FrameGrid(window_frames=1000)


def test_targets_of_an_event_straddling_patch_rows():
    # at the patch-row hop (160 ms) an event from 0.10 s to 0.50 s covers
    # row 0 [0, .16): .06/.16; rows 1 and 2 fully; row 3 [.48, .64): .02/.16
    target = frame_targets([(1, 0.10, 0.50)], num_frames=5, hop=0.16, num_classes=2)
    assert torch.allclose(target[:, 1], torch.tensor([0.375, 1.0, 1.0, 0.125, 0.0]))
    assert not target[:, 0].any()
    # at 40 ms: frame 2 [.08, .12) is half covered, frames 3..11 fully, frame 12 [.48, .52) half
    fine = frame_targets([(0, 0.10, 0.50)], num_frames=16, hop=0.04, num_classes=1)[:, 0]
    expected = torch.zeros(16)
    expected[2], expected[3:12], expected[12] = 0.5, 1.0, 0.5
    assert torch.allclose(fine, expected)


def test_overlapping_events_of_one_class_do_not_count_twice():
    target = frame_targets([(0, 0.0, 0.06), (0, 0.02, 0.10)], num_frames=3, hop=0.04, num_classes=1)[:, 0]
    assert torch.allclose(target, torch.tensor([1.0, 1.0, 0.5]))


def test_window_edges_split_an_event_between_windows():
    # windows of 2.56 s; an event from 2.0 to 3.0 s lies in both
    event = [Event("c", 2.0, 3.0, "dog")]
    first = window_events(event, {"dog": 0}, start=0.0, seconds=2.56)
    second = window_events(event, {"dog": 0}, start=2.56, seconds=2.56)
    assert first == [(0, 2.0, 2.56)]
    assert second[0][0] == 0 and second[0][1] == 0.0 and second[0][2] == pytest.approx(0.44)
    t1 = frame_targets(first, 64, 0.04, 1)[:, 0]
    t2 = frame_targets(second, 64, 0.04, 1)[:, 0]
    assert t1[:50].sum() == 0 and bool((t1[50:] == 1).all())  # 2.00 s = frame 50, to the window's end
    assert bool((t2[:11] == 1).all()) and t2[11:].sum() == 0  # 0.44 s = 11 frames
    # together they cover exactly the event's 1.0 s
    assert float((t1.sum() + t2.sum()) * 0.04) == pytest.approx(1.0)


# ------------------------------------------------------------------ head
def test_rows_to_frames_interpolates_between_row_centres():
    rows = torch.tensor([[[0.0], [4.0]]])  # (1, R=2, C=1), centres at 0.5 and 1.5 rows
    frames = rows_to_frames(rows, 4)[0, :, 0]  # frame centres at 0.125, 0.375, ... 1.875 rows
    # before the first centre and after the last the edge value; between them, linear
    assert torch.allclose(frames, torch.tensor([0.0, 0.0, 0.5, 1.5, 2.5, 3.5, 4.0, 4.0]))


def test_linear_softmax_pool():
    probs = torch.tensor([[[0.5], [0.5], [0.0]], [[1.0], [0.2], [0.0]]])
    assert torch.allclose(linear_softmax_pool(probs)[:, 0], torch.tensor([0.5, (1 + 0.04) / 1.2]))


def test_frame_detector_shapes_and_frozen_encoder():
    torch.manual_seed(0)
    model = FrameDetector(EncoderConfig(embed_dim=32, depth=1, num_heads=2), num_classes=3, frames_per_row=4,
                          freeze_encoder=True).train()
    fbank = torch.randn(2, 1, 64, 128)  # 4 patch rows
    logits = model(fbank)
    assert logits.shape == (2, 16, 3)
    assert not model.encoder.training
    logits.sum().backward()
    assert model.head.weight.grad is not None and model.encoder.blocks[0].mlp.fc1.weight.grad is None
    # a clip's frames depend only on its own fbank: batched equals one at a time
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(fbank)[1], model(fbank[1:])[0], atol=1e-5)


def test_concat_row_pooling_keeps_each_frequency_patch():
    torch.manual_seed(0)
    cfg = EncoderConfig(embed_dim=32, depth=1, num_heads=2)
    model = FrameDetector(cfg, num_classes=3, frames_per_row=4, row_pooling="concat").eval()
    fbank = torch.randn(2, 1, 64, 128)  # 4 patch rows of 8 frequency patches
    with torch.no_grad():
        tokens = model.encoder(fbank).x[:, 1:]  # (2, 4 * 8, 32), time-major
        rows = model.row_features(fbank)
    assert rows.shape == (2, 4, 8 * 32) and model.head.in_features == 8 * 32
    assert torch.equal(rows[:, 2, 5 * 32 : 6 * 32], tokens[:, 2 * 8 + 5])  # row 2, frequency patch 5
    mean = FrameDetector(cfg, num_classes=3, frames_per_row=4)
    mean.encoder.load_state_dict(model.encoder.state_dict())
    with torch.no_grad():
        assert torch.allclose(mean.eval().row_features(fbank), rows.reshape(2, 4, 8, 32).mean(dim=2), atol=1e-6)
    assert model(fbank).shape == (2, 16, 3)
    with pytest.raises(ValueError, match="row_pooling must be one of"):
        FrameDetector(cfg, num_classes=3, row_pooling="max")


# ------------------------------------------------------------------ decoding
def test_median_window_in_frames():
    assert median_window_frames(0.0, 0.04) == 1
    assert median_window_frames(0.2, 0.04) == 5
    assert median_window_frames(0.16, 0.04) == 5  # 4 frames -> next odd number
    assert median_window_frames(0.45, 0.04) == 11


def test_median_filter_by_hand():
    x = np.array([[0.9], [0.1], [0.8], [0.7], [0.0], [0.6], [0.2]])
    # window 3, edges repeated: [.9,.9,.1] [.9,.1,.8] [.1,.8,.7] [.8,.7,0] [.7,0,.6] [0,.6,.2] [.6,.2,.2]
    assert np.allclose(median_filter(x, 3)[:, 0], [0.9, 0.8, 0.7, 0.7, 0.6, 0.2, 0.2])


def test_decode_synthetic_posteriors_by_hand():
    hop = 0.04
    post = np.zeros((20, 2))
    post[3:9, 0] = 0.8  # class a: frames 3..8
    post[5, 0] = 0.1  # a one-frame dip, removed by the median filter
    post[12, 0] = 0.9  # a one-frame blip, removed by the median filter
    post[10:20, 1] = 0.4  # class b: below 0.5 but above its own threshold 0.3, to the clip's end
    events = decode(post, ["a", "b"], hop, thresholds={"a": 0.5, "b": 0.3}, median_window=0.12, clip="x", duration=0.78)
    assert events == [Event("x", 0.12, 0.36, "a"), Event("x", 0.4, 0.78, "b")]
    # without the filter the dip splits a's event and the blip is an event of its own
    raw = decode(post, ["a", "b"], hop, thresholds=0.5, median_window=0.0, clip="x")
    assert [(e.onset, e.offset) for e in raw if e.label == "a"] == [(0.12, 0.2), (0.24, 0.36), (0.48, 0.52)]
    assert not [e for e in raw if e.label == "b"]


def test_events_tsv_and_json(tmp_path):
    events = {"x": [Event("x", 0.4, 0.78, "b"), Event("x", 0.12, 0.36, "a")], "y": []}
    write_events_tsv(tmp_path / "out.tsv", events)
    assert (tmp_path / "out.tsv").read_text() == "filename\tonset\toffset\tevent_label\nx\t0.120\t0.360\ta\nx\t0.400\t0.780\tb\n"
    assert '"event_label": "a"' in events_to_json(events)


# ------------------------------------------------------------------ scoring
REF = {
    "c1": [Event("c1", 1.0, 3.0, "dog"), Event("c1", 4.0, 6.0, "cat")],
    "c2": [Event("c2", 0.5, 2.5, "cat")],
}


def _shifted(by: float):
    return {clip: [Event(clip, e.onset + by, e.offset + by, e.label) for e in events] for clip, events in REF.items()}


def test_event_f1_perfect_within_and_outside_the_collar():
    labels = ["cat", "dog"]
    perfect = event_metrics(REF, REF, labels)
    assert perfect["event_f1_micro"] == pytest.approx(1.0) and perfect["event_f1_macro"] == pytest.approx(1.0)
    assert perfect["segment_f1_micro"] == pytest.approx(1.0)
    assert event_metrics(REF, _shifted(0.15), labels)["event_f1_micro"] == pytest.approx(1.0)  # inside 200 ms
    outside = event_metrics(REF, _shifted(0.25), labels)
    assert outside["event_f1_micro"] == pytest.approx(0.0)  # outside: every event both missed and false
    # a segment-based view of the same 250 ms shift: 1 s segments still overlap mostly
    assert 0.5 < outside["segment_f1_micro"] < 1.0
    # half the events found: P = 1, R = 2/3 -> F1 = 0.8
    half = {"c1": [REF["c1"][0], REF["c1"][1]], "c2": []}
    assert event_metrics(REF, half, labels)["event_f1_micro"] == pytest.approx(0.8)


def _posteriors(events, hop=0.04, duration=8.0, labels=("cat", "dog")):
    n = int(math.ceil(duration / hop))
    out = {}
    for clip, clip_events in events.items():
        post = np.zeros((n, len(labels)))
        for e in clip_events:
            post[int(round(e.onset / hop)) : int(round(e.offset / hop)), labels.index(e.label)] = 1.0
        out[clip] = post
    return out


def test_psds_perfect_and_wrong_posteriors():
    labels = ["cat", "dog"]
    durations = {"c1": 8.0, "c2": 8.0}
    perfect = psds_scores(_posteriors(REF), 0.04, REF, durations, labels)
    assert perfect["psds1"] == pytest.approx(1.0) and perfect["psds2"] == pytest.approx(1.0)
    swapped = {c: [Event(c, e.onset, e.offset, "dog" if e.label == "cat" else "cat") for e in ev] for c, ev in REF.items()}
    wrong = psds_scores(_posteriors(swapped), 0.04, REF, durations, labels)
    assert wrong["psds1"] == pytest.approx(0.0) and wrong["psds2"] == pytest.approx(0.0)
