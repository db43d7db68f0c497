"""fairseq audio manifests: a root folder line, then ``relative/path<TAB>num_samples``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Union

__all__ = ["Manifest", "ManifestError", "read_manifest"]


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and line."""


@dataclass
class Manifest:
    """The clips of one split.

    ``root`` is absolute: a relative root line resolves against the manifest's folder.
    """

    path: Path
    root: Path
    files: List[str] = field(default_factory=list)
    num_samples: List[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def full_path(self, index: int) -> Path:
        return self.root / self.files[index]


def read_manifest(path: Union[str, Path], min_samples: int = 0) -> Manifest:
    """Parse a manifest, keeping clips with at least ``min_samples`` samples.

    Raises :class:`ManifestError` naming the file and line for a missing file,
    an empty manifest, or a line that is not ``path<TAB>integer``.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    with path.open("r", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    if not lines or not lines[0].strip():
        raise ManifestError(f"{path}: empty manifest; the first line must be the audio root folder")
    root = Path(lines[0].strip())
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    manifest = Manifest(path=path, root=root)
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise ManifestError(
                f"{path}:{lineno}: expected 'relative/path<TAB>num_samples', got {line!r}"
            )
        rel, count = parts
        try:
            n = int(count)
        except ValueError:
            raise ManifestError(
                f"{path}:{lineno}: sample count {count!r} is not an integer"
            ) from None
        if n < 0:
            raise ManifestError(f"{path}:{lineno}: negative sample count {n}")
        if n < min_samples:
            continue
        manifest.files.append(rel)
        manifest.num_samples.append(n)
    return manifest
