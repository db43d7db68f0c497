"""Label converters: each dataset's metadata -> labelled manifests for fine-tuning and evaluation.

One module per dataset (adding a dataset is adding a module); :mod:`.records`
holds what they produce and :mod:`.writer` writes it.

Every converter turns a dataset's own metadata into a :class:`LabelledSplits`; one
writer (:func:`write_label_manifests`) then reads the audio headers (in parallel,
each file once) and writes, per output folder:

* ``{split}.tsv``: a fairseq manifest (root line, then ``path<TAB>num_samples``);
* ``{split}.lbl``: ``clip_id<TAB>label1,label2``, line *i* describing clip *i*
  of ``{split}.tsv``. The clip id is the file name without folder or
  extension (the key :func:`sslam_plugin.data.labels.clip_id` derives from a
  manifest line), except where file names repeat within a split (Speech
  Commands: ``yes/0a7c2a8d_nohash_0.wav`` and ``no/0a7c2a8d_nohash_0.wav``),
  where it is the relative path without extension;
* ``label_descriptors.csv``: ``index,label_id,display_name`` rows, no header;
* ``rejected.tsv``: listed files that are missing, empty or unreadable (left
  out), root line then ``path<TAB>reason``;
* ``missing.tsv`` (AudioSet): ``split<TAB>clip_id`` of listed segments with no
  downloaded file;
* ``{split}_weights.csv`` (AudioSet ``as2m/train_weights.csv``): one sampling weight per line,
  aligned with ``{split}.tsv``: the sum over a clip's labels of
  ``1 / (number of clips in the split with that label)``.

Converters (each from the dataset's documented layout):

* :func:`audioset`: segment CSVs (``# ...`` header lines,
  ``YTID, start_seconds, end_seconds, "label1,label2"``) plus
  ``class_labels_indices.csv``; files matched by YouTube id; folders ``as20k``
  and ``as2m`` (``train`` and ``eval`` each).
* :func:`esc50`: ``meta/esc50.csv``; one output folder per held-out fold.
* :func:`speech_commands`: Speech Commands v2 word folders with
  ``validation_list.txt`` and ``testing_list.txt``; ``_background_noise_`` excluded.
* :func:`spass`: per-scene ``*_MatrixLabels*.csv``; first 75 % of the sorted
  file names train, the rest eval; one output folder per scene.
* :func:`urbansed`: ``annotations/{split}/*.txt`` (onset, offset, label);
  clip-level multi-labels.
* :func:`generic_csv`: ``path,labels`` rows for anything else.
"""

from __future__ import annotations

from .audioset import audioset, read_audioset_segments
from .esc50 import esc50
from .generic_csv import generic_csv
from .records import LabelFormatError, LabelledClip, LabelledSplits, LabelReport
from .spass import read_spass_labels, spass
from .speech_commands import speech_commands
from .urbansed import read_urbansed_annotation, urbansed
from .writer import (
    read_descriptor_rows,
    sampling_weights,
    write_label_descriptors,
    write_label_manifests,
    write_labels,
    write_sampling_weights,
)

__all__ = [
    "LabelledClip",
    "LabelledSplits",
    "LabelReport",
    "LabelFormatError",
    "read_descriptor_rows",
    "write_label_descriptors",
    "write_labels",
    "sampling_weights",
    "write_sampling_weights",
    "write_label_manifests",
    "read_audioset_segments",
    "audioset",
    "esc50",
    "speech_commands",
    "read_spass_labels",
    "spass",
    "read_urbansed_annotation",
    "urbansed",
    "generic_csv",
]
