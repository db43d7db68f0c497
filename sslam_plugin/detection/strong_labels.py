"""Strong labels (events with onset and offset) in the field's formats, read into one form and checked.

Formats read:

* DCASE / DESED strong TSV: header ``filename<TAB>onset<TAB>offset<TAB>event_label``, one event a
  line; a line with empty onset, offset and label is a clip annotated with no events.
* DCASE weak TSV: header ``filename<TAB>event_labels`` (labels comma-separated).
* DCASE unlabelled list: header ``filename``, one clip a line.
* DCASE durations TSV: header ``filename<TAB>duration`` (seconds).
* URBAN-SED: one ``.txt`` per clip, ``onset<TAB>offset<TAB>label`` lines (clip id = file stem).
* ``sslam-make-polyphonic``'s ``{split}_events.tsv`` (scene, source, label, onset_s, offset_s,
  gain_db); a source with several labels gives one event per label.

The one form (:class:`StrongLabels`) is what a detection data folder stores as
``{split}_strong.tsv``: the DCASE strong TSV with clip ids (file names without extension) in the
``filename`` column. Clip ids follow :func:`sslam_plugin.data.labels.clip_id`.

Times are seconds. No fairseq needed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ..data.labels import clip_id

__all__ = [
    "Event",
    "StrongLabelError",
    "StrongLabels",
    "STRONG_HEADER",
    "read_dcase_strong",
    "read_dcase_weak",
    "read_unlabelled",
    "read_durations",
    "read_urbansed_folder",
    "read_polyphony_events",
    "check_events",
    "merge_overlaps",
    "write_strong_tsv",
    "events_by_clip",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
STRONG_HEADER = "filename\tonset\toffset\tevent_label"
WEAK_HEADER = "filename\tevent_labels"


class StrongLabelError(ValueError):
    """An annotation that cannot be used; the message names ``file:line`` and what is wrong."""


@dataclass(frozen=True)
class Event:
    """One sound event of a clip. ``where`` (``file:line``) is for messages and not compared."""

    clip: str
    onset: float
    offset: float
    label: str
    where: str = field(default="", compare=False, repr=False)


@dataclass
class StrongLabels:
    """A split's annotations in one form.

    ``events``: strongly annotated clips (an empty list: annotated, no events);
    ``weak``: clips with clip-level labels only; ``unlabelled``: clips without labels;
    ``durations``: seconds per clip where known (used by :func:`check_events` and scoring).
    """

    events: Dict[str, List[Event]] = field(default_factory=dict)
    weak: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    unlabelled: List[str] = field(default_factory=list)
    durations: Dict[str, float] = field(default_factory=dict)

    def labels(self) -> List[str]:
        """Every label used, sorted."""
        used = {e.label for events in self.events.values() for e in events}
        used.update(label for labels in self.weak.values() for label in labels)
        return sorted(used)

    def clip_labels(self, clip: str) -> Tuple[str, ...]:
        """A clip's labels: those of its events (strong clips) or its weak labels."""
        if clip in self.events:
            return tuple(sorted({e.label for e in self.events[clip]}))
        return self.weak.get(clip, ())


# ------------------------------------------------------------------ reading
def _lines(path: Path) -> List[str]:
    if not path.is_file():
        raise StrongLabelError(f"{path}: file not found")
    return path.read_text(encoding="utf-8-sig").splitlines()


def _fields(line: str) -> List[str]:
    return line.split("\t") if "\t" in line else line.split()


def _header(path: Path, lines: List[str], expected: Sequence[str]) -> None:
    found = [f.strip() for f in _fields(lines[0])] if lines else []
    if found[: len(expected)] != list(expected):
        raise StrongLabelError(f"{path}:1: expected the header {chr(9).join(expected)!r}, got {lines[0] if lines else ''!r}")


def _seconds(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise StrongLabelError(f"{where}: {what} {text!r} is not a number of seconds") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise StrongLabelError(f"{where}: {what} {text!r} is not a finite number of seconds")
    return value


def _event(clip: str, onset: str, offset: str, label: str, where: str) -> Event:
    label = label.strip()
    if not label:
        raise StrongLabelError(f"{where}: the event has no label")
    return Event(clip, _seconds(onset, "onset", where), _seconds(offset, "offset", where), label, where)


def read_dcase_strong(path: PathLike) -> StrongLabels:
    """A DCASE/DESED strong TSV (``filename onset offset event_label``)."""
    path = Path(path)
    lines = _lines(path)
    _header(path, lines, ("filename", "onset", "offset", "event_label"))
    out = StrongLabels()
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        parts = line.split("\t")
        if len(parts) == 1:
            parts = line.split()
        clip = clip_id(parts[0].strip())
        rest = [p.strip() for p in parts[1:]]
        events = out.events.setdefault(clip, [])
        if not any(rest) or all(p.lower() in ("", "nan") for p in rest):
            continue  # a clip annotated with no events
        if len(rest) != 3:
            raise StrongLabelError(f"{where}: expected 'filename<TAB>onset<TAB>offset<TAB>event_label', got {line!r}")
        events.append(_event(clip, rest[0], rest[1], rest[2], where))
    return out


def read_dcase_weak(path: PathLike) -> StrongLabels:
    """A DCASE weak TSV (``filename event_labels``, labels comma-separated)."""
    path = Path(path)
    lines = _lines(path)
    _header(path, lines, ("filename", "event_labels"))
    out = StrongLabels()
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) > 2:
            raise StrongLabelError(f"{path}:{lineno}: expected 'filename<TAB>label1,label2', got {line!r}")
        labels = parts[1] if len(parts) == 2 else ""
        out.weak[clip_id(parts[0].strip())] = tuple(sorted({lab.strip() for lab in labels.split(",") if lab.strip()}))
    return out


def read_unlabelled(path: PathLike) -> StrongLabels:
    """A DCASE unlabelled list (header ``filename``)."""
    path = Path(path)
    lines = _lines(path)
    _header(path, lines, ("filename",))
    return StrongLabels(unlabelled=[clip_id(line.split("\t")[0].strip()) for line in lines[1:] if line.strip()])


def read_durations(path: PathLike) -> Dict[str, float]:
    """A DCASE durations TSV (``filename duration``) as {clip id: seconds}."""
    path = Path(path)
    lines = _lines(path)
    _header(path, lines, ("filename", "duration"))
    out = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if line.strip():
            parts = _fields(line)
            if len(parts) != 2:
                raise StrongLabelError(f"{path}:{lineno}: expected 'filename<TAB>duration', got {line!r}")
            out[clip_id(parts[0])] = _seconds(parts[1], "duration", f"{path}:{lineno}")
    return out


def read_urbansed_folder(folder: PathLike) -> StrongLabels:
    """URBAN-SED annotations of one split: every ``*.txt`` in ``folder`` (``onset offset label`` lines)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise StrongLabelError(f"{folder}: no URBAN-SED annotation files (*.txt)")
    out = StrongLabels()
    for txt in files:
        events = out.events.setdefault(txt.stem, [])
        for lineno, line in enumerate(_lines(txt), start=1):
            if not line.strip():
                continue
            parts = _fields(line)
            if len(parts) != 3:
                raise StrongLabelError(f"{txt}:{lineno}: expected 'onset<TAB>offset<TAB>label', got {line!r}")
            events.append(_event(txt.stem, parts[0], parts[1], parts[2], f"{txt}:{lineno}"))
    return out


def read_polyphony_events(path: PathLike) -> StrongLabels:
    """``sslam-make-polyphonic``'s ``{split}_events.tsv``: every scene is strongly annotated."""
    from ..data.polyphony import read_events

    path = Path(path)
    out = StrongLabels()
    try:
        rows = read_events(path)
    except FileNotFoundError:
        raise StrongLabelError(f"{path}: file not found") from None
    except ValueError as err:
        raise StrongLabelError(str(err)) from None
    for lineno, row in enumerate(rows, start=2):
        events = out.events.setdefault(str(row["scene"]), [])
        for label in str(row["label"]).split(","):
            where = f"{path}:{lineno}"
            events.append(Event(str(row["scene"]), float(row["onset_s"]), float(row["offset_s"]), label.strip(), where))
    return out


# ------------------------------------------------------------------ checking
def check_events(
    labels: StrongLabels,
    known_labels: Optional[Iterable[str]] = None,
    durations: Optional[Mapping[str, float]] = None,
    end_tolerance: float = 0.5,
) -> StrongLabels:
    """Check every event; returns a copy with offsets past the clip's end clipped to it.

    Refused (StrongLabelError naming ``file:line``): an onset outside the clip (below 0, or at or
    after its end when the duration is known), an offset not after its onset, an offset more than
    ``end_tolerance`` seconds after the clip's end, a label not in ``known_labels``.
    Offsets up to ``end_tolerance`` past the end (rounding in the annotation tools) are clipped.
    """
    known = set(known_labels) if known_labels is not None else None
    durations = dict(labels.durations, **(durations or {}))
    out = StrongLabels(weak=dict(labels.weak), unlabelled=list(labels.unlabelled), durations=durations)
    clipped = 0
    for clip, events in labels.events.items():
        duration = durations.get(clip)
        kept = []
        for e in events:
            where = e.where or f"clip {clip}"
            if known is not None and e.label not in known:
                raise StrongLabelError(
                    f"{where}: label {e.label!r} is not one of the {len(known)} known labels "
                    f"(label_descriptors.csv); add it there or fix the annotation"
                )
            if e.onset < 0 or (duration is not None and e.onset >= duration):
                span = f"0 to {duration:g} s" if duration is not None else "from 0 s"
                raise StrongLabelError(f"{where}: onset {e.onset:g} s is outside the clip {clip!r} ({span})")
            if e.offset <= e.onset:
                raise StrongLabelError(f"{where}: offset {e.offset:g} s is not after the onset {e.onset:g} s")
            offset = e.offset
            if duration is not None and offset > duration:
                if offset > duration + end_tolerance:
                    raise StrongLabelError(
                        f"{where}: offset {offset:g} s is past the end of clip {clip!r} ({duration:g} s)"
                    )
                offset, clipped = duration, clipped + 1
            kept.append(Event(clip, e.onset, offset, e.label, e.where))
        out.events[clip] = kept
    for clip, clip_labels in labels.weak.items():
        unknown = [lab for lab in clip_labels if known is not None and lab not in known]
        if unknown:
            raise StrongLabelError(f"clip {clip!r}: weak labels {unknown} are not among the known labels")
    if clipped:
        logger.info("%d event offsets past their clip's end (by at most %g s) were clipped to it", clipped, end_tolerance)
    return out


def merge_overlaps(events: Sequence[Event]) -> List[Event]:
    """Events of one clip with overlapping or touching events of the same label merged, sorted by onset."""
    by_label: Dict[str, List[Event]] = defaultdict(list)
    for e in events:
        by_label[e.label].append(e)
    merged = []
    for label_events in by_label.values():
        current = None
        for e in sorted(label_events, key=lambda x: (x.onset, x.offset)):
            if current is not None and e.onset <= current.offset:
                current = Event(current.clip, current.onset, max(current.offset, e.offset), current.label, current.where)
            else:
                if current is not None:
                    merged.append(current)
                current = e
        merged.append(current)
    return sorted(merged, key=lambda x: (x.onset, x.offset, x.label))


# ------------------------------------------------------------------ writing
def events_by_clip(events: Iterable[Event]) -> Dict[str, List[Event]]:
    out: Dict[str, List[Event]] = defaultdict(list)
    for e in events:
        out[e.clip].append(e)
    return dict(out)


def write_strong_tsv(path: PathLike, events: Mapping[str, Sequence[Event]], decimals: int = 3) -> None:
    """The DCASE strong TSV: one line per event, clips in order; a clip without events as ``clip<TAB><TAB><TAB>``."""
    lines = [STRONG_HEADER]
    for clip in sorted(events):
        clip_events = sorted(events[clip], key=lambda e: (e.onset, e.offset, e.label))
        if not clip_events:
            lines.append(f"{clip}\t\t\t")
        for e in clip_events:
            lines.append(f"{clip}\t{e.onset:.{decimals}f}\t{e.offset:.{decimals}f}\t{e.label}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
