"""Set-up of a data-loading worker process.

Each training item allocates a few buffers of half a megabyte to a few
megabytes (the decoded clip, the resampled one, the framed and padded fbank
input). glibc serves allocations above its mmap threshold with fresh ``mmap``
pages, so every clip pays page faults for memory the previous clip just gave
back; in a worker that decodes and computes fbanks all day this costs about a
third of each clip's time (``sslam-benchmark data`` measures it).
:func:`keep_freed_memory_for_reuse` raises the threshold so such buffers come
from, and return to, the worker's heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import signal
import sys

__all__ = ["keep_freed_memory_for_reuse", "worker_init_fn"]

logger = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# larger than any per-clip buffer (a 10 s clip at 48 kHz in float64 is under 4 MB; the padded
# fbank input of 1000 frames under 2 MB); whole batches (the collater's) are built in the parent
_THRESHOLD_BYTES = 64 << 20

_tuned = False


def keep_freed_memory_for_reuse() -> bool:
    """Keep large freed buffers in this process's heap (glibc only; elsewhere a no-op).

    Returns:
        True when glibc accepted the settings (also on a repeated call).
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * _THRESHOLD_BYTES))
    _tuned = ok
    if not ok:
        logger.debug("mallopt refused the worker's allocation settings")
    return ok


def worker_init_fn(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: set up one worker process.

    Ctrl-C reaches every process of the terminal's job: the training process
    decides what it means (save and stop after the update), so the workers
    ignore it and keep serving the batches it still needs; they leave with it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory_for_reuse()
