#!/usr/bin/env python3
"""Write the deterministic, labelled synthetic demo corpus and its manifests.

Ten classes of synthetic sound events, monophonic clips (one event class) and
polyphonic clips (2 to 4 overlapping classes), in four splits. The polyphonic
clips are scenes built by the benchmark builder's core
(``sslam_plugin.data.polyphony``: ``plan_scenes`` + ``render_scene``) from a
pool of synthetic events drawn for that split alone:

    OUT/audio/{split}/*.wav
    OUT/manifests/{split}.tsv   fairseq manifest (root line, then path<TAB>samples)
    OUT/manifests/{split}.lbl   clip_id<TAB>label1,label2
    OUT/manifests/label_descriptors.csv   index,label_id,display_name

Splits: train and valid (mixed mono and poly), eval_mono, eval_poly.
Every tenth clip is written at 32 kHz so the resampling path is exercised.

Usage: python scripts/make_demo_data.py OUT [--seed 0] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch
import torchaudio

from sslam_plugin.data.polyphony import SceneConfig, plan_scenes, render_scene

logger = logging.getLogger("make_demo_data")

CLIP_SECONDS = 2.6
BASE_RATE = 16000
ALT_RATE = 32000

Synth = Callable[[np.random.Generator, int, int], np.ndarray]


def _envelope(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """An event of random onset and duration with 10 ms fades (silence elsewhere)."""
    length = int(rng.uniform(0.6, 1.8) * rate)
    start = int(rng.uniform(0, max(n - length, 1)))
    env = np.zeros(n)
    fade = int(0.01 * rate)
    seg = np.ones(min(length, n - start))
    ramp = np.linspace(0.0, 1.0, min(fade, len(seg)))
    seg[: len(ramp)] *= ramp
    seg[len(seg) - len(ramp) :] *= ramp[::-1]
    env[start : start + len(seg)] = seg
    return env


def _harmonic(low: float, high: float) -> Synth:
    def synth(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
        t = np.arange(n) / rate
        f0 = rng.uniform(low, high)
        wave = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
        return wave

    return synth


def _band_noise(low: float, high: float) -> Synth:
    def synth(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
        spec = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1.0 / rate)
        spec[(freqs < low) | (freqs > high)] = 0
        wave = np.fft.irfft(spec, n)
        return wave / (np.abs(wave).max() + 1e-9)

    return synth


def _chirp(up: bool) -> Synth:
    def synth(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
        t = np.arange(n) / rate
        f_start, f_end = rng.uniform(300, 600), rng.uniform(2500, 4000)
        if not up:
            f_start, f_end = f_end, f_start
        freq = f_start + (f_end - f_start) * t / t[-1]
        return np.sin(2 * np.pi * np.cumsum(freq) / rate)

    return synth


def _clicks(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    wave = np.zeros(n)
    period = int(rate / rng.uniform(8, 20))
    click = np.exp(-np.arange(int(0.003 * rate)) / (0.0005 * rate)) * rng.standard_normal(int(0.003 * rate))
    for start in range(int(rng.integers(0, period)), n - len(click), period):
        wave[start : start + len(click)] += click
    return wave / (np.abs(wave).max() + 1e-9)


def _am_tone(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    carrier = np.sin(2 * np.pi * rng.uniform(800, 1200) * t)
    return carrier * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 8) * t))


def _siren(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    freq = rng.uniform(900, 1300) + 400 * np.sin(2 * np.pi * rng.uniform(0.8, 2.0) * t)
    return np.sin(2 * np.pi * np.cumsum(freq) / rate)


CLASSES: List[Tuple[str, str, Synth]] = [
    ("low_hum", "Low harmonic hum", _harmonic(80, 160)),
    ("mid_tone", "Mid harmonic tone", _harmonic(350, 700)),
    ("high_whistle", "High whistle", _harmonic(1800, 3000)),
    ("rumble", "Low band noise", _band_noise(60, 500)),
    ("hiss", "High band noise", _band_noise(4000, 7500)),
    ("chirp_up", "Rising chirp", _chirp(True)),
    ("chirp_down", "Falling chirp", _chirp(False)),
    ("clicks", "Click train", _clicks),
    ("tremolo", "Amplitude-modulated tone", _am_tone),
    ("siren", "Frequency-modulated siren", _siren),
]

# split -> (number of clips, fraction polyphonic)
SPLITS: Dict[str, Tuple[int, float]] = {
    "train": (480, 0.5),
    "valid": (80, 0.5),
    "eval_mono": (80, 0.0),
    "eval_poly": (80, 1.0),
}


# Polyphonic scenes: 2 to 4 events of distinct classes at random onsets, levels within 8 dB
# of each other (the monophonic clips' amplitudes span 0.2-0.5, also 8 dB).
SCENES = SceneConfig(
    scene_seconds=CLIP_SECONDS, min_sources=2, max_sources=4, min_level_db=-8.0, max_level_db=0.0,
    reference_rms=0.2, sample_rate=BASE_RATE,
)
NOISE_STD = 0.003  # faint background noise in every clip


def _finish(mix: np.ndarray) -> np.ndarray:
    return (mix / max(1.0, np.abs(mix).max() / 0.95)).astype(np.float32)


def make_clip(rng: np.random.Generator, labels: Sequence[int], rate: int) -> np.ndarray:
    n = int(CLIP_SECONDS * rate)
    mix = NOISE_STD * rng.standard_normal(n)
    for label in labels:
        event = CLASSES[label][2](rng, n, rate) * _envelope(n, rate, rng)
        mix += rng.uniform(0.2, 0.5) * event
    return _finish(mix)


def _event(rng: np.random.Generator, label: int) -> np.ndarray:
    """One event of a class alone, 0.6 to 1.8 s with 10 ms fades, at the base rate."""
    n = int(rng.uniform(0.6, 1.8) * BASE_RATE)
    wave = CLASSES[label][2](rng, n, BASE_RATE)
    fade = np.linspace(0.0, 1.0, int(0.01 * BASE_RATE))
    wave[: len(fade)] *= fade
    wave[n - len(fade) :] *= fade[::-1]
    return wave


def make_scenes(rng: np.random.Generator, count: int) -> List[Tuple[List[int], np.ndarray]]:
    """``count`` polyphonic scenes at the base rate, as (class indices, waveform) pairs."""
    if count == 0:
        return []
    per_class = int(np.ceil(count * 3 / len(CLASSES))) + 2  # about as many events as the scenes use
    pool = [(label, _event(rng, label)) for label in range(len(CLASSES)) for _ in range(per_class)]
    rms = [float(np.sqrt(np.mean(w**2))) for _, w in pool]
    plans = plan_scenes([len(w) for _, w in pool], [(CLASSES[k][0],) for k, _ in pool], count, SCENES, rng)
    scenes = []
    for events in plans:
        scene = render_scene(events, [pool[e.source][1] for e in events], [rms[e.source] for e in events], SCENES)
        scenes.append((sorted(pool[e.source][0] for e in events), scene))
    return scenes


def _resampled(wave: np.ndarray, rate: int) -> np.ndarray:
    if rate == BASE_RATE:
        return wave
    return torchaudio.functional.resample(torch.from_numpy(wave), BASE_RATE, rate).numpy()


def _scene_clip(rng: np.random.Generator, scene: np.ndarray, rate: int) -> np.ndarray:
    mix = _resampled(scene, rate).astype(np.float64)
    return _finish(mix + NOISE_STD * rng.standard_normal(len(mix)))


def write_split(out: Path, split: str, count: int, poly_fraction: float, seed: int) -> None:
    rng = np.random.default_rng([seed, sum(map(ord, split))])
    audio_dir = out / "audio" / split
    audio_dir.mkdir(parents=True, exist_ok=True)
    manifests = out / "manifests"
    tsv_lines = ["../audio"]  # a relative root resolves against the manifest folder
    lbl_lines = []
    polyphonic = rng.random(count) < poly_fraction
    scenes = iter(make_scenes(rng, int(polyphonic.sum())))
    for i in range(count):
        rate = ALT_RATE if i % 10 == 9 else BASE_RATE
        if polyphonic[i]:
            labels, scene = next(scenes)
            clip = _scene_clip(rng, scene, rate)
        else:
            labels = [int(rng.integers(len(CLASSES)))]
            clip = make_clip(rng, labels, rate)
        clip_id = f"{split}_{i:04d}"
        sf.write(str(audio_dir / f"{clip_id}.wav"), clip, rate, subtype="PCM_16")
        tsv_lines.append(f"{split}/{clip_id}.wav\t{len(clip)}")
        lbl_lines.append(f"{clip_id}\t{','.join(CLASSES[k][0] for k in labels)}")
    (manifests / f"{split}.tsv").write_text("\n".join(tsv_lines) + "\n")
    (manifests / f"{split}.lbl").write_text("\n".join(lbl_lines) + "\n")
    logger.info("%s: %d clips", split, count)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every split's clip count")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    (args.out / "manifests").mkdir(parents=True, exist_ok=True)
    with (args.out / "manifests" / "label_descriptors.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        for index, (label_id, name, _) in enumerate(CLASSES):
            writer.writerow([index, label_id, name])
    for split, (count, poly) in SPLITS.items():
        write_split(args.out, split, max(1, int(round(count * args.scale))), poly, args.seed)


if __name__ == "__main__":
    main()
