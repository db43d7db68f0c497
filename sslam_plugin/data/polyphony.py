"""Polyphonic scenes from a labelled monophonic collection: a benchmark builder.

Each scene of ``scene_seconds`` sums 2..N source clips. Every source is first
scaled to ``reference_rms`` (the RMS of the whole source clip), then by a gain
drawn uniformly in [``min_level_db``, ``max_level_db``]: the sources' levels
relative to each other are what ``gain_db`` records. A scene whose peak would
pass ``peak`` is scaled down as a whole (relative levels unchanged).

Placement: a source shorter than the scene starts at an onset drawn uniformly
so that it ends inside the scene (``onset_s`` / ``offset_s`` are where the
source clip lies in the scene, its silent parts included); a longer one is cut
to a random scene-long excerpt (onset 0). Weakly labelled sources (a label for
a 10 s clip) should therefore not be longer than the scene.

Train/test sources are disjoint: the source clips are split first, per label
set (the sorted labels of a clip), ordering that group's clips by a hash of
(seed, path) and sending the first ``round(test_fraction * n)`` to the test
side (at least one to each side when the group has two or more clips); every
scene of a split draws its sources from that split's side only.

Output (``build_polyphonic``), the layout ``sslam-prepare-labels`` writes, so a
fine-tuning or linear-evaluation recipe reads it directly::

    DEST/audio/{split}/{split}_{i:05d}.wav   16 kHz mono PCM-16
    DEST/{split}.tsv            manifest (root line ``audio``, relative to DEST)
    DEST/{split}.lbl            clip_id<TAB>label1,label2 (the union of the sources' labels)
    DEST/{split}_events.tsv     scene, source, label, onset_s, offset_s, gain_db (header line)
    DEST/label_descriptors.csv  copied from the source collection
    DEST/sources.tsv            split<TAB>source path: which side each usable source went to
    DEST/rejected.tsv           unusable sources (root line, then path<TAB>reason)

No fairseq needed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf
import torchaudio

from .audio import AudioLoadError, load_audio
from .labels import labels_for_files, read_clip_labels, read_label_descriptors
from .manifest import read_manifest
from .scan import check_can_write, write_lines, write_rejected

__all__ = [
    "SceneConfig",
    "SceneEvent",
    "PolyphonyReport",
    "split_sources",
    "plan_scenes",
    "render_scene",
    "load_source",
    "build_polyphonic",
    "read_events",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
EVENTS_HEADER = "scene\tsource\tlabel\tonset_s\toffset_s\tgain_db"


@dataclass
class SceneConfig:
    scene_seconds: float = field(default=10.0, metadata={"help": "length of every scene"})
    min_sources: int = field(default=2, metadata={"help": "fewest sources in a scene"})
    max_sources: int = field(default=4, metadata={"help": "most sources in a scene"})
    min_level_db: float = field(default=-10.0, metadata={"help": "lowest source gain, dB relative to reference_rms"})
    max_level_db: float = field(default=0.0, metadata={"help": "highest source gain, dB relative to reference_rms"})
    reference_rms: float = field(default=0.05, metadata={"help": "RMS every source is scaled to before its gain"})
    distinct_labels: bool = field(default=True, metadata={"help": "no two sources of a scene share a label"})
    peak: float = field(default=0.95, metadata={"help": "scenes louder than this peak are scaled down as a whole"})
    sample_rate: int = field(default=SAMPLE_RATE, metadata={"help": "rate of sources and scenes"})

    @property
    def scene_samples(self) -> int:
        return int(round(self.scene_seconds * self.sample_rate))

    def validate(self) -> None:
        if self.scene_seconds <= 0:
            raise ValueError(f"scene_seconds must be > 0, got {self.scene_seconds}")
        if not 1 <= self.min_sources <= self.max_sources:
            raise ValueError(f"need 1 <= min_sources <= max_sources, got {self.min_sources} and {self.max_sources}")
        if self.min_level_db > self.max_level_db:
            raise ValueError(f"min_level_db {self.min_level_db} is above max_level_db {self.max_level_db}")
        if self.reference_rms <= 0 or not 0 < self.peak <= 1:
            raise ValueError(f"reference_rms must be > 0 and peak in (0, 1], got {self.reference_rms}, {self.peak}")


class SceneEvent(NamedTuple):
    """One source in a scene (all positions in samples at the scene rate)."""

    source: int  # index into the source list given to plan_scenes
    onset: int  # first sample of the scene the source covers
    excerpt_start: int  # first sample of the source used
    length: int  # samples used
    gain_db: float  # relative to reference_rms


@dataclass
class PolyphonyReport:
    scenes: Dict[str, int] = field(default_factory=dict)  # split -> scenes written
    sources: Dict[str, int] = field(default_factory=dict)  # split -> sources on that side
    rejected: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def summary(self) -> str:
        parts = [f"{split}: {n} scenes from {self.sources.get(split, 0)} sources" for split, n in self.scenes.items()]
        return "; ".join(parts) + f"; {len(self.rejected)} sources rejected"


# ------------------------------------------------------------------ the split
def _hash_key(seed: int, name: str) -> str:
    return hashlib.sha1(f"{seed}:{name}".encode("utf-8")).hexdigest()


def split_sources(
    names: Sequence[str], labels: Sequence[Sequence[str]], test_fraction: float, seed: int = 0
) -> List[bool]:
    """Which source clips go to the test side (True), per label set (see the module docstring).

    Args:
        names: (S,) source paths (the hash key); labels: (S,) each clip's label ids.

    Returns:
        (S,) list of bool, True = test side.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    groups: Dict[Tuple[str, ...], List[int]] = defaultdict(list)
    for i, clip_labels in enumerate(labels):
        groups[tuple(sorted(clip_labels))].append(i)
    test = [False] * len(names)
    for members in groups.values():
        members = sorted(members, key=lambda i: _hash_key(seed, names[i]))
        n_test = int(round(test_fraction * len(members)))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        for i in members[:n_test]:
            test[i] = True
    return test


# ------------------------------------------------------------------ scenes
def plan_scenes(
    lengths: Sequence[int],
    labels: Sequence[Sequence[str]],
    count: int,
    cfg: SceneConfig,
    rng: np.random.Generator,
) -> List[List[SceneEvent]]:
    """Draw ``count`` scenes: which sources, where, how loud.

    Args:
        lengths: (S,) samples of each source at ``cfg.sample_rate``.
        labels: (S,) each source's label ids (``distinct_labels``: a scene never repeats one).

    Returns:
        count lists of events, each with ``min_sources``..``max_sources`` entries.
    """
    cfg.validate()
    if len(lengths) != len(labels) or not lengths:
        raise ValueError(f"need one length per source and at least one source, got {len(lengths)} and {len(labels)}")
    scene = cfg.scene_samples
    scenes = []
    for _ in range(count):
        wanted = int(rng.integers(cfg.min_sources, cfg.max_sources + 1))
        chosen: List[int] = []
        used: set = set()
        # random draws rather than a permutation per scene: large collections stay cheap
        for _attempt in range(50 * wanted):
            i = int(rng.integers(0, len(lengths)))
            if i in chosen or (cfg.distinct_labels and used & set(labels[i])):
                continue
            chosen.append(i)
            used |= set(labels[i])
            if len(chosen) == wanted:
                break
        if len(chosen) < cfg.min_sources:
            raise ValueError(
                f"could not find {cfg.min_sources} sources with distinct labels among {len(lengths)} "
                f"({len({tuple(sorted(x)) for x in labels})} label sets); lower min_sources or allow shared labels"
            )
        events = []
        for i in chosen:
            n = int(lengths[i])
            if n >= scene:
                start, length, onset = int(rng.integers(0, n - scene + 1)), scene, 0
            else:
                start, length, onset = 0, n, int(rng.integers(0, scene - n + 1))
            gain = float(rng.uniform(cfg.min_level_db, cfg.max_level_db))
            events.append(SceneEvent(i, onset, start, length, gain))
        scenes.append(events)
    return scenes


def render_scene(
    events: Sequence[SceneEvent], waveforms: Sequence[np.ndarray], source_rms: Sequence[float], cfg: SceneConfig
) -> np.ndarray:
    """Sum the events' sources at their places and levels.

    Args:
        events: one scene's events; waveforms: (E,) each event's whole source clip
            (time,) at ``cfg.sample_rate``, aligned with ``events``; source_rms: (E,)
            RMS of those whole clips (> 0).

    Returns:
        (scene_samples,) float32.
    """
    out = np.zeros(cfg.scene_samples, dtype=np.float64)
    for event, wave, rms in zip(events, waveforms, source_rms, strict=True):
        piece = np.asarray(wave, dtype=np.float64)[event.excerpt_start : event.excerpt_start + event.length]
        gain = cfg.reference_rms / rms * 10.0 ** (event.gain_db / 20.0)
        out[event.onset : event.onset + len(piece)] += gain * piece
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > cfg.peak:
        out *= cfg.peak / peak  # as a whole: the sources' relative levels stay as drawn
    return out.astype(np.float32)


def load_source(path: Union[str, Path], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A source clip as (time,) float32 mono at ``sample_rate``.

    Raises :class:`AudioLoadError` naming the file when it cannot be used
    (missing, undecodable, empty, NaN, or silent: a silent source has no level).
    """
    wave, rate = load_audio(path)
    if rate != sample_rate:
        wave = torchaudio.functional.resample(wave, rate, sample_rate)
    data = wave.numpy().astype(np.float32)
    if not data.size or float(np.sqrt(np.mean(data.astype(np.float64) ** 2))) < 1e-6:
        raise AudioLoadError(f"{path}: silent clip (no level to scale)")
    return data


def _rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(wave, dtype=np.float64) ** 2)))


# ------------------------------------------------------------------ from files
class _Sources(NamedTuple):
    paths: List[Path]
    names: List[str]
    labels: List[Tuple[str, ...]]
    lengths: List[int]
    rms: List[float]


def _read_sources(manifest_path: Path, labels_path: Path, descriptors: Path, rate: int) -> Tuple[_Sources, List[Tuple[str, str]]]:
    """Every usable source with its labels, length and level; the rest as (path, reason)."""
    manifest = read_manifest(manifest_path)
    label_set = read_label_descriptors(descriptors)
    by_clip = read_clip_labels(labels_path, label_set)
    ids = label_set.ids
    sources = _Sources([], [], [], [], [])
    rejected: List[Tuple[str, str]] = []
    for index, rel in enumerate(manifest.files):
        try:
            clip_labels = labels_for_files([rel], by_clip, str(labels_path), root=manifest.root)[0]
        except ValueError:
            rejected.append((rel, f"no line in {labels_path.name}"))
            continue
        if not clip_labels:
            rejected.append((rel, "no labels"))
            continue
        try:
            wave = load_source(manifest.full_path(index), rate)
        except AudioLoadError as err:
            rejected.append((rel, str(err).replace(f"{manifest.full_path(index)}: ", "")))
            continue
        sources.paths.append(manifest.full_path(index))
        sources.names.append(rel)
        sources.labels.append(tuple(ids[k] for k in clip_labels))
        sources.lengths.append(len(wave))
        sources.rms.append(_rms(wave))
    for rel, reason in rejected:
        logger.warning("skipping source %s: %s", manifest.root / rel, reason)
    return sources, rejected


def build_polyphonic(
    manifest: Union[str, Path],
    dest: Union[str, Path],
    scenes: Mapping[str, int],
    cfg: Optional[SceneConfig] = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    labels: Optional[Union[str, Path]] = None,
    descriptors: Optional[Union[str, Path]] = None,
    force: bool = False,
) -> PolyphonyReport:
    """Write polyphonic scenes mixed from a labelled collection (layout: module docstring).

    Args:
        manifest: ``{split}.tsv`` of the sources; ``labels`` defaults to the ``.lbl``
            beside it and ``descriptors`` to ``label_descriptors.csv`` beside it.
        scenes: two entries, {training split name: scenes, test split name: scenes},
            e.g. {"train": 800, "eval": 200}; the first draws from the training
            sources, the second from the disjoint test sources.
        seed: seeds the source split and every draw: the same seed writes the same files.
    """
    cfg = cfg or SceneConfig()
    cfg.validate()
    manifest, dest = Path(manifest), Path(dest)
    labels_path = Path(labels) if labels else manifest.with_suffix(".lbl")
    descriptors_path = Path(descriptors) if descriptors else manifest.parent / "label_descriptors.csv"
    if len(scenes) != 2 or any(n < 0 for n in scenes.values()):
        raise ValueError(f"scenes must name two splits with counts >= 0 (train side, test side), got {dict(scenes)}")
    for required, what in ((labels_path, "labels (.lbl)"), (descriptors_path, "label_descriptors.csv")):
        if not required.is_file():
            raise FileNotFoundError(f"{required}: {what} not found; write it with sslam-prepare-labels or pass its path")
    splits = list(scenes)
    outputs = [dest / f"{s}{suffix}" for s in splits for suffix in (".tsv", ".lbl", "_events.tsv")]
    check_can_write(outputs, force)

    sources, rejected = _read_sources(manifest, labels_path, descriptors_path, cfg.sample_rate)
    if not sources.names:
        raise ValueError(f"{manifest}: no usable source clip ({len(rejected)} rejected; see the warnings)")
    is_test = split_sources(sources.names, sources.labels, test_fraction, seed)
    report = PolyphonyReport(rejected=rejected)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(descriptors_path, dest / "label_descriptors.csv")
    write_rejected(dest / "rejected.tsv", read_manifest(manifest).root, rejected)
    write_lines(dest / "sources.tsv", [f"{splits[int(t)]}\t{n}" for n, t in zip(sources.names, is_test)])
    order = {label_id: k for k, label_id in enumerate(read_label_descriptors(descriptors_path).ids)}

    for side, split in enumerate(splits):
        members = [i for i, t in enumerate(is_test) if int(t) == side]
        report.sources[split] = len(members)
        if scenes[split] and not members:
            raise ValueError(f"{manifest}: no source clips left for split {split!r}; lower or raise test_fraction")
        rng = np.random.default_rng([seed, side])
        plans = plan_scenes(
            [sources.lengths[i] for i in members], [sources.labels[i] for i in members], scenes[split], cfg, rng
        ) if scenes[split] else []
        audio_dir = dest / "audio" / split
        audio_dir.mkdir(parents=True, exist_ok=True)
        tsv, lbl, events_out = ["audio"], [], [EVENTS_HEADER]
        for n, events in enumerate(plans):
            picked = [members[e.source] for e in events]
            waves = [load_source(sources.paths[i], cfg.sample_rate) for i in picked]
            scene = render_scene(events, waves, [sources.rms[i] for i in picked], cfg)
            scene_id = f"{split}_{n:05d}"
            sf.write(str(audio_dir / f"{scene_id}.wav"), scene, cfg.sample_rate, subtype="PCM_16")
            tsv.append(f"{split}/{scene_id}.wav\t{len(scene)}")
            scene_labels = sorted({lab for i in picked for lab in sources.labels[i]}, key=order.__getitem__)
            lbl.append(f"{scene_id}\t{','.join(scene_labels)}")
            for event, i in zip(events, picked):
                onset = event.onset / cfg.sample_rate
                events_out.append(
                    f"{scene_id}\t{sources.names[i]}\t{','.join(sources.labels[i])}\t{onset:.4f}\t"
                    f"{onset + event.length / cfg.sample_rate:.4f}\t{event.gain_db:.2f}"
                )
        write_lines(dest / f"{split}.tsv", tsv)
        write_lines(dest / f"{split}.lbl", lbl)
        write_lines(dest / f"{split}_events.tsv", events_out)
        report.scenes[split] = len(plans)
    logger.info("%s", report.summary())
    return report


def read_events(path: Union[str, Path]) -> List[Dict[str, object]]:
    """Rows of a ``{split}_events.tsv`` as dicts (onset_s, offset_s, gain_db as floats)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != EVENTS_HEADER:
        raise ValueError(f"{path}: expected the header {EVENTS_HEADER!r}")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        if len(parts) != 6:
            raise ValueError(f"{path}:{lineno}: expected 6 tab-separated fields, got {len(parts)}")
        rows.append({
            "scene": parts[0], "source": parts[1], "label": parts[2],
            "onset_s": float(parts[3]), "offset_s": float(parts[4]), "gain_db": float(parts[5]),
        })
    return rows

