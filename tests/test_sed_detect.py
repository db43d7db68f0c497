"""Detection over long files in windows: an event across a window edge is found exactly once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from sslam_plugin.detection.decoding import decode
from sslam_plugin.detection.detector import SoundEventDetector
from sslam_plugin.detection.head import FrameDetector
from sslam_plugin.detection.targets import FrameGrid
from sslam_plugin.features import FbankConfig
from sslam_plugin.models.encoder import EncoderConfig

RATE = 16000
WINDOW = 256  # fbank frames: 2.56 s windows


class LoudnessFrames(nn.Module):
    """A stand-in frame model whose logit is the level of the loudest mel bin: loud = active.

    It sees only its window, like the real head, so a window edge cuts what it sees.
    """

    def __init__(self, frames_per_output: int = 4, level: float = 0.2):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))
        self.frames_per_output, self.level = frames_per_output, level

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        energy = fbank[:, 0].max(dim=-1).values  # (N, 1, T, M) -> (N, T), the loudest mel bin
        n, t = energy.shape
        pooled = energy.reshape(n, t // self.frames_per_output, self.frames_per_output).mean(dim=-1)  # -> (N, F)
        return (self.scale * (pooled - self.level)).unsqueeze(-1)  # -> (N, F, 1)


def tone_file(seconds: float, events) -> np.ndarray:
    rng = np.random.default_rng(0)
    wave = 1e-4 * rng.standard_normal(int(seconds * RATE))
    t = np.arange(len(wave)) / RATE
    for onset, offset in events:
        on = (t >= onset) & (t < offset)
        wave[on] += 0.5 * np.sin(2 * np.pi * 1000 * t[on])
    return wave.astype(np.float32)


def stand_in_detector() -> SoundEventDetector:
    grid = FrameGrid(window_frames=WINDOW, hop=0.04)
    return SoundEventDetector(LoudnessFrames(), FbankConfig(target_length=WINDOW), grid, ["tone"]).eval()


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_an_event_across_a_window_edge_is_found_once(overlap):
    detector = stand_in_detector()
    # 2.0-3.2 s crosses the edge at 2.56 s (and, with overlap, the one at 1.28 s + 1.28 s = 2.56 s)
    wave = tone_file(20.0, [(2.0, 3.2), (7.0, 7.6), (19.5, 20.0)])
    assert len(detector.window_starts(2000, overlap)) == (8 if overlap == 0.0 else 15)
    events = detector.detect(wave, RATE, clip="long", overlap=overlap)
    assert [e.label for e in events] == ["tone"] * 3
    for event, (onset, offset) in zip(events, [(2.0, 3.2), (7.0, 7.6), (19.5, 20.0)]):
        assert abs(event.onset - onset) <= 0.05 and abs(event.offset - offset) <= 0.05, events
    assert events[-1].offset == pytest.approx(20.0)  # the last event ends with the file, not the padded window


def test_decoding_each_window_alone_would_split_the_event():
    """The premise of the test above: windows decoded one by one give the edge-crossing event twice."""
    detector = stand_in_detector()
    wave = tone_file(5.12, [(2.0, 3.2)])
    per_window = []
    for start in (0, WINDOW):
        posteriors = detector.posteriors(wave[start * 160 : (start + WINDOW) * 160], RATE)
        per_window += decode(posteriors.posteriors, ["tone"], 0.04)
    assert len(per_window) == 2
    assert len(detector.detect(wave, RATE)) == 1


def test_one_window_posteriors_equal_the_model_on_the_padded_clip():
    torch.manual_seed(0)
    frames = FrameDetector(EncoderConfig(embed_dim=32, depth=1, num_heads=2), num_classes=2, frames_per_row=4).eval()
    detector = SoundEventDetector(frames, FbankConfig(target_length=WINDOW), FrameGrid(WINDOW, 0.04), ["a", "b"]).eval()
    wave = tone_file(2.0, [(0.5, 1.0)])
    out = detector.posteriors(wave, RATE)
    from sslam_plugin.clips import clip_windows

    fbank = clip_windows(wave, RATE, detector.frontend).fbank  # (1, WINDOW, M), padded as in training
    with torch.no_grad():
        expected = torch.sigmoid(frames(fbank.unsqueeze(1)))[0, :50].numpy()  # 2.0 s / 40 ms
    assert out.posteriors.shape == (50, 2) and out.duration == pytest.approx(2.0)
    assert np.allclose(out.posteriors, expected, atol=1e-5)


def test_plot_detection_from_tsvs(tmp_path):
    from sslam_plugin.cli.plot_detection import main

    audio = tmp_path / "clip.wav"
    import soundfile as sf

    sf.write(str(audio), tone_file(3.0, [(1.0, 2.0)]), RATE)
    tsv = "filename\tonset\toffset\tevent_label\nclip.wav\t1.000\t2.000\ttone\n"
    (tmp_path / "ref.tsv").write_text(tsv)
    (tmp_path / "pred.tsv").write_text(tsv.replace("1.000\t2.000", "1.040\t2.000"))
    out = tmp_path / "fig.png"
    assert main([str(audio), "--predicted", str(tmp_path / "pred.tsv"), "--reference", str(tmp_path / "ref.tsv"),
                 "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(audio), "--predicted", str(tmp_path / "missing.tsv"), "--out", str(out)]) == 1


def test_detection_core_imports_without_fairseq():
    import subprocess
    import sys

    code = (
        "import sys, importlib.abc\n"
        "class HideFairseq(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'fairseq' or name.startswith('fairseq.'):\n"
        "            raise ImportError('fairseq is hidden for this test')\n"
        "sys.meta_path.insert(0, HideFairseq())\n"
        "import sslam_plugin.detection, sslam_plugin.detection.detector, sslam_plugin.detection.evaluate\n"
        "import sslam_plugin.detection.dataset, sslam_plugin.detection.data_folder, sslam_plugin.cli.detect\n"
        "assert not any(m == 'fairseq' or m.startswith('fairseq.') for m in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
