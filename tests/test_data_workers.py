"""Data-loading workers keep large freed buffers in their heap (glibc)."""

import sys
import textwrap

import pytest

from conftest import REPO, run

SCRIPT = textwrap.dedent(
    """
    import ctypes, ctypes.util
    import numpy as np
    from sslam_plugin.data.workers import keep_freed_memory_for_reuse

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2

    def mmapped_while_alive(nbytes):
        buffer = np.ones(nbytes, dtype=np.uint8)  # touched, so really allocated
        held = libc.mallinfo2().hblkhd
        del buffer
        return held

    before = mmapped_while_alive(8 << 20)
    assert keep_freed_memory_for_reuse() and keep_freed_memory_for_reuse()  # idempotent
    after = mmapped_while_alive(8 << 20)
    print(before >= 8 << 20, after < 8 << 20)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt/mallinfo2")
def test_a_tuned_worker_serves_clip_sized_buffers_from_its_heap():
    result = run([sys.executable, "-c", SCRIPT], cwd=REPO)
    if "mallinfo2" in result.stderr:
        pytest.skip("this C library has no mallinfo2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]  # mmapped before, from the heap after


def test_training_datasets_hand_fairseq_the_worker_set_up():
    pytest.importorskip("fairseq")
    from sslam_plugin.data.workers import worker_init_fn
    from sslam_plugin.training.classification_task import LabelledFbankDataset
    from sslam_plugin.training.dataset import FbankMaskDataset

    # fairseq's EpochBatchIterator passes getattr(dataset, "worker_init_fn") to its DataLoader
    assert FbankMaskDataset.worker_init_fn is worker_init_fn
    assert LabelledFbankDataset.worker_init_fn is worker_init_fn
