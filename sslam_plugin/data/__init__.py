"""Reading audio and manifests (no fairseq needed)."""

from .audio import AudioLoadError, load_audio
from .labels import LabelSet, clip_id, labels_for_files, multi_hot, read_clip_labels, read_label_descriptors
from .manifest import Manifest, ManifestError, read_manifest

__all__ = [
    "AudioLoadError",
    "LabelSet",
    "Manifest",
    "ManifestError",
    "clip_id",
    "labels_for_files",
    "load_audio",
    "multi_hot",
    "read_clip_labels",
    "read_label_descriptors",
    "read_manifest",
]
