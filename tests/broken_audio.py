"""Fixture audio for the data-robustness tests: good clips and every kind of broken one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import numpy as np
import soundfile as sf


def sine(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    """(rate * seconds,) float32 sine of amplitude 0.5."""
    t = np.arange(int(round(rate * seconds))) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, data: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype)
    return path


# name -> (frames in the header, or None when the header cannot be read)
GOOD = {
    "good_16k.wav": 16000,  # 1 s mono 16 kHz PCM_16
    "good.flac": 8000,  # 0.5 s FLAC
    "stereo.wav": 16000,  # 1 s, two equal channels
    "hi_44k.wav": 44100,  # 1 s at 44.1 kHz
    "u8.wav": 16000,  # 8-bit unsigned PCM
    "sub/dir/nested.WAV": 4800,  # 0.3 s, upper-case extension in a sub-folder
}


def make_collection(root: Path) -> Dict[str, Path]:
    """Write good and broken clips under ``root``; returns name -> path.

    Broken: ``empty.wav`` (0 bytes), ``zero.wav`` (a valid header with 0
    frames), ``corrupt.wav`` (not audio), ``nan.wav`` (a float WAV holding a
    NaN: the header is fine, decoding is not), ``short.wav`` (100 samples, under
    one 25 ms window) and ``dangling.wav`` (a link to a file that does not exist).
    A ``notes.txt`` is not audio and must be ignored.
    """
    paths = {
        "good_16k.wav": write(root / "good_16k.wav", sine(16000, 1.0), 16000),
        "good.flac": write(root / "good.flac", sine(16000, 0.5), 16000),
        "stereo.wav": write(root / "stereo.wav", np.stack([sine(16000, 1.0)] * 2, axis=1), 16000),
        "hi_44k.wav": write(root / "hi_44k.wav", sine(44100, 1.0), 44100),
        "u8.wav": write(root / "u8.wav", sine(16000, 1.0), 16000, subtype="PCM_U8"),
        "sub/dir/nested.WAV": write(root / "sub" / "dir" / "nested.WAV", sine(16000, 0.3), 16000),
    }
    nan = sine(16000, 1.0)
    nan[1234] = np.nan
    paths["nan.wav"] = write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    paths["short.wav"] = write(root / "short.wav", sine(16000, 100 / 16000), 16000)
    paths["zero.wav"] = write(root / "zero.wav", np.zeros(0, dtype=np.float32), 16000)
    (root / "empty.wav").write_bytes(b"")
    paths["empty.wav"] = root / "empty.wav"
    (root / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00this is not audio at all" * 4)
    paths["corrupt.wav"] = root / "corrupt.wav"
    os.symlink(root / "was_deleted.wav", root / "dangling.wav")
    paths["dangling.wav"] = root / "dangling.wav"
    (root / "notes.txt").write_text("not audio\n")
    return paths


def write_manifest(path: Path, root: Path, entries: Dict[str, int]) -> Path:
    """A fairseq manifest listing ``entries`` (relative path -> sample count) under ``root``."""
    path.write_text(f"{root}\n" + "".join(f"{rel}\t{n}\n" for rel, n in entries.items()))
    return path


def load_script(name: str):
    """The command-line module ``sslam_plugin.cli.<name>``, to call its ``main(argv)`` in this process."""
    import importlib

    return importlib.import_module(f"sslam_plugin.cli.{name}")
