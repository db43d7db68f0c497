"""Reading audio and manifests (no fairseq needed)."""

from .audio import AudioLoadError, load_audio
from .manifest import Manifest, ManifestError, read_manifest

__all__ = ["AudioLoadError", "load_audio", "Manifest", "ManifestError", "read_manifest"]
