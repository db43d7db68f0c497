"""The polyphony benchmark builder on synthetic tones: what is mixed in is where and as loud as
the event list says, labels follow the sources, train/eval sources are disjoint, a seed
replays everything, and bad source clips are skipped and named."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sslam_plugin.cli.make_polyphonic import main as make_polyphonic
from sslam_plugin.data.labels import labels_for_files, read_clip_labels, read_label_descriptors
from sslam_plugin.data.manifest import read_manifest
from sslam_plugin.data.polyphony import SceneConfig, plan_scenes, read_events, split_sources

RATE = 16000
TONES = {"tone_a": 500.0, "tone_b": 1250.0, "tone_c": 2500.0, "tone_d": 5000.0}
LEVELS = (-6.0, 0.0)
BAD = ("broken.wav", "empty.wav", "silent.wav", "missing.wav")


def tone(freq: float, seconds: float, rate: int, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = amplitude * np.sin(2 * np.pi * freq * t)
    fade = int(0.005 * rate)  # 5 ms ramps: no click spreads energy over other frequencies
    ramp = np.linspace(0, 1, fade)
    wave[:fade] *= ramp
    wave[-fade:] *= ramp[::-1]
    return wave.astype(np.float32)


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """Three tone clips per label (one at 32 kHz), of different lengths and levels, plus bad clips."""
    root = tmp_path_factory.mktemp("tones")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    tsv, lbl = ["audio"], []
    for label, freq in TONES.items():
        for k in range(3):
            rate = 32000 if k == 2 else RATE
            name = f"{label}_{k}.wav"
            sf.write(root / "audio" / name, tone(freq, rng.uniform(0.6, 1.2), rate, rng.uniform(0.1, 0.8)), rate)
            tsv.append(f"{name}\t{int(sf.info(root / 'audio' / name).frames)}")
            lbl.append(f"{name[:-4]}\t{label}")
    (root / "audio" / "broken.wav").write_bytes(b"RIFF not really a wav file")
    (root / "audio" / "empty.wav").write_bytes(b"")
    sf.write(root / "audio" / "silent.wav", np.zeros(RATE, dtype=np.float32), RATE)
    for name in BAD:
        tsv.append(f"{name}\t16000")
        lbl.append(f"{name[:-4]}\ttone_a")
    (root / "train.tsv").write_text("\n".join(tsv) + "\n")
    (root / "train.lbl").write_text("\n".join(lbl) + "\n")
    (root / "label_descriptors.csv").write_text("".join(f"{i},{k},{k} tone\n" for i, k in enumerate(TONES)))
    return root


def build(collection: Path, dest: Path, *extra: str) -> int:
    return make_polyphonic([
        str(collection / "train.tsv"), "--dest", str(dest), "--train-scenes", "8", "--eval-scenes", "4",
        "--sources", "2", "3", "--level-db", str(LEVELS[0]), str(LEVELS[1]), "--scene-seconds", "3", *extra,
    ])


@pytest.fixture(scope="module")
def built(collection, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("poly") / "out"
    assert build(collection, dest) == 0
    return dest


def tone_amplitude(x: np.ndarray, freq: float) -> float:
    """Amplitude of a sinusoid at ``freq`` in ``x`` (Hann-windowed projection)."""
    w = np.hanning(len(x))
    t = np.arange(len(x)) / RATE
    return float(2 * np.abs(np.sum(w * x * np.exp(-2j * np.pi * freq * t))) / w.sum())


def framed(x: np.ndarray, freq: float, frame: int = 800, hop: int = 400) -> np.ndarray:
    """(frames,) amplitude at ``freq`` in 50 ms frames every 25 ms."""
    return np.array([tone_amplitude(x[s : s + frame], freq) for s in range(0, len(x) - frame + 1, hop)])


def scenes_of(dest: Path, split: str):
    manifest = read_manifest(dest / f"{split}.tsv")
    labels = read_label_descriptors(dest / "label_descriptors.csv")
    clip_labels = labels_for_files(manifest.files, read_clip_labels(dest / f"{split}.lbl", labels), split)
    events = read_events(dest / f"{split}_events.tsv")
    for rel, indices in zip(manifest.files, clip_labels):
        scene_id = Path(rel).stem
        audio, rate = sf.read(manifest.root / rel, dtype="float32")
        yield audio, rate, {labels.ids[i] for i in indices}, [e for e in events if e["scene"] == scene_id]


@pytest.mark.parametrize("split", ["train", "eval"])
def test_labels_and_onsets_are_what_was_mixed_in(built, split):
    count = 0
    for audio, rate, clip_labels, events in scenes_of(built, split):
        count += 1
        assert rate == RATE and len(audio) == 3 * RATE
        assert 2 <= len(events) <= 3
        assert clip_labels == {e["label"] for e in events} and len(clip_labels) == len(events)  # distinct labels
        for event in events:
            amp = framed(audio, TONES[event["label"]])
            starts = np.arange(len(amp)) * 400 / RATE
            inside = (starts >= event["onset_s"]) & (starts + 0.05 <= event["offset_s"])
            outside = (starts + 0.05 < event["onset_s"] - 0.01) | (starts > event["offset_s"] + 0.01)
            assert inside.sum() >= 5, event
            level = np.median(amp[inside])
            assert amp[inside].min() > 0.5 * level, event  # present all along [onset, offset]
            assert outside.any() and amp[outside].max() < 0.02 * level, event  # and nowhere else
    assert count == {"train": 8, "eval": 4}[split]


def test_levels_are_in_range_and_as_recorded(built):
    """Every gain is in the range, and two tones of a scene differ in level by the recorded
    difference of their gains (each source was first brought to the same reference level)."""
    checked = 0
    for split in ("train", "eval"):
        for audio, _, _, events in scenes_of(built, split):
            assert all(LEVELS[0] <= e["gain_db"] <= LEVELS[1] for e in events)
            measured = []
            for e in events:
                segment = audio[int(e["onset_s"] * RATE) + 80 : int(e["offset_s"] * RATE) - 80]
                measured.append(20 * np.log10(tone_amplitude(segment, TONES[e["label"]])))
            for a in range(1, len(events)):
                expected = events[a]["gain_db"] - events[0]["gain_db"]
                assert measured[a] - measured[0] == pytest.approx(expected, abs=0.3), events
                checked += 1
    assert checked >= 12
    gains = [e["gain_db"] for s in ("train", "eval") for e in read_events(built / f"{s}_events.tsv")]
    assert max(gains) - min(gains) > 3.0  # the range is used, not one fixed level


def test_train_and_eval_sources_are_disjoint(built):
    sides = dict(line.split("\t")[::-1] for line in (built / "sources.tsv").read_text().splitlines())
    train = {n for n, s in sides.items() if s == "train"}
    evaluation = {n for n, s in sides.items() if s == "eval"}
    assert train and evaluation and not train & evaluation
    assert len(train | evaluation) == 12  # the bad clips are in neither
    # every label set keeps sources on both sides (3 clips each: 1 to eval)
    assert {n.rsplit("_", 1)[0] for n in evaluation} == set(TONES) == {n.rsplit("_", 1)[0] for n in train}
    for split, allowed in (("train", train), ("eval", evaluation)):
        used = {e["source"] for e in read_events(built / f"{split}_events.tsv")}
        assert used <= allowed, split


def test_same_seed_same_files_other_seed_other_scenes(collection, built, tmp_path):
    again = tmp_path / "again"
    assert build(collection, again) == 0
    names = ["train.tsv", "train.lbl", "train_events.tsv", "eval_events.tsv", "sources.tsv", "audio/train/train_00003.wav"]
    match, mismatch, errors = filecmp.cmpfiles(built, again, names, shallow=False)
    assert match == names, (mismatch, errors)
    other = tmp_path / "other"
    assert build(collection, other, "--seed", "5") == 0
    assert (other / "train_events.tsv").read_text() != (built / "train_events.tsv").read_text()


def test_bad_sources_are_skipped_and_named(built, capsys, collection, tmp_path):
    rejected = (built / "rejected.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in rejected[1:]) == sorted(BAD)
    assert "silent" in dict(line.split("\t") for line in rejected[1:])["silent.wav"]
    assert build(collection, tmp_path / "x") == 0
    out = capsys.readouterr().out
    assert all(f"rejected: {name}" in out for name in BAD)


def test_clear_errors(collection, tmp_path, capsys):
    assert build(collection, tmp_path / "a") == 0
    assert build(collection, tmp_path / "a") == 1  # no silent overwrite
    assert "--force" in capsys.readouterr().err
    (tmp_path / "lonely.tsv").write_text((collection / "train.tsv").read_text().replace("audio", str(collection / "audio"), 1))
    assert make_polyphonic([str(tmp_path / "lonely.tsv"), "--dest", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "lonely.lbl" in err and "sslam-prepare-labels" in err


def test_split_rule_and_planner_edges():
    names = [f"c{i}" for i in range(40)]
    labels = [("x",)] * 20 + [("y",)] * 19 + [("z",)]
    test = split_sources(names, labels, 0.25, seed=3)
    assert sum(test[:20]) == 5 and sum(test[20:39]) == 5 and test[39] is False  # a lone clip stays on the train side
    assert split_sources(names, labels, 0.25, seed=3) == test and split_sources(names, labels, 0.25, seed=4) != test
    cfg = SceneConfig(scene_seconds=1.0, min_sources=2, max_sources=2)
    long_and_short = plan_scenes([3 * RATE, RATE // 2], [("x",), ("y",)], 20, cfg, np.random.default_rng(0))
    for events in long_and_short:
        for e in events:
            assert 0 <= e.onset and e.onset + e.length <= RATE
            assert (e.length, e.onset) == (RATE, 0) if e.source == 0 else e.length == RATE // 2
    with pytest.raises(ValueError, match="distinct labels"):
        plan_scenes([RATE, RATE], [("x",), ("x",)], 1, cfg, np.random.default_rng(0))


def test_demo_polyphonic_clips_come_from_the_builder(demo_data):
    """The demo corpus keeps its format: eval_poly scenes of 2-4 distinct classes, eval_mono one
    class, train both; its scenes are plan_scenes + render_scene over a pool of single events."""
    import importlib.util

    from conftest import REPO

    manifests = demo_data / "data" / "manifests"
    counts = {}
    for split in ("train", "eval_mono", "eval_poly"):
        lines = (manifests / f"{split}.lbl").read_text().splitlines()
        assert len(lines) == len(read_manifest(manifests / f"{split}.tsv"))
        counts[split] = [len(set(line.split("\t")[1].split(","))) for line in lines]
    assert set(counts["eval_mono"]) == {1} and set(counts["eval_poly"]) <= {2, 3, 4}
    assert 1 in counts["train"] and max(counts["train"]) >= 2
    spec = importlib.util.spec_from_file_location("make_demo_data", REPO / "scripts" / "make_demo_data.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    a, b = demo.make_scenes(np.random.default_rng(3), 5), demo.make_scenes(np.random.default_rng(3), 5)
    for (labels_a, wave_a), (labels_b, wave_b) in zip(a, b, strict=True):
        assert labels_a == labels_b and np.array_equal(wave_a, wave_b)  # deterministic
        assert 2 <= len(labels_a) == len(set(labels_a)) <= 4 and len(wave_a) == demo.SCENES.scene_samples


def test_output_loads_as_a_labelled_split(built):
    """What the fine-tuning / linear-evaluation tasks read: multi-hot targets of the mixed-in labels."""
    from sslam_plugin.data.labelled import load_labelled_split
    from sslam_plugin.features import FbankConfig

    labels = read_label_descriptors(built / "label_descriptors.csv")
    split = load_labelled_split(str(built), "eval", labels, FbankConfig(target_length=300))
    events = read_events(built / "eval_events.tsv")
    assert len(split) == 4
    for i in range(len(split)):
        item = split[i]
        assert item["source"].shape == (1, 300, 128)
        mixed_in = {e["label"] for e in events if e["scene"] == f"eval_{i:05d}"}
        assert {labels.ids[k] for k in item["target"].nonzero().flatten().tolist()} == mixed_in
