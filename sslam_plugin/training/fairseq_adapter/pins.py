"""The fairseq code the adapter replaces or relies on, pinned by a hash of its source.

Each replacement was written against one fairseq function (``fairseq-fixed``
0.12.3.1) and is only right while that function is the same; the internals
that the replacements and :mod:`sslam_plugin.training.data_loading` read
(private fields of the mixed-precision optimiser, the loss scaler and the
batch iterators) are pinned the same way, through the code that defines them.
:func:`changed_sources` lists what differs in the installed fairseq, each with
the plugin code to review; ``tests/test_fairseq_adapter.py`` fails on any, and
:func:`sslam_plugin.training.fairseq_adapter.install` logs a warning.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from typing import Dict, List, Tuple

from .originals import TARGETS, original

__all__ = ["PINNED", "source_sha256", "changed_sources"]

_ADAPTER = "sslam_plugin.training.fairseq_adapter"
# "module:qualified name" -> (sha256 of inspect.getsource, the plugin code to review when it changes)
PINNED: Dict[str, Tuple[str, str]] = {
    "fairseq.distributed.utils:call_main": (
        "c2a32fa44fa277a6c05d75a0abd83e71485b4af2ac5689bc97e9c76907a238d9",
        "sslam_plugin.training.processes.call_main (process start-up)"),
    "fairseq.distributed.utils:_broadcast_object_slow": (
        "9fc3ef1939a94874bcfcc53c8fa79738d45999771c1aa0d96655148b89ad648b",
        f"{_ADAPTER}.distributed.broadcast_object_slow"),
    "fairseq.distributed.utils:all_gather_list": (
        "6b8a560da7a7a8b8b58af12276c5bb0f505bbb1717dae9dd137fc7e4224e1815",
        f"{_ADAPTER}.distributed.all_gather_list"),
    "fairseq.models.distributed_fairseq_model:DistributedFairseqModel": (
        "caa68bcad9ada051cf588c80ab92d5e0196021decb63122ee33969d40aea5c5c",
        f"{_ADAPTER}.distributed.distributed_model"),
    "fairseq_cli.train:validate_and_save": (
        "55091327efc060932abd8ff6f5aa89527f74ae5e1adb2deb709e77009055bdc5",
        "sslam_plugin.training.preemption.validate_and_save"),
    "fairseq.optim.fp16_optimizer:_FP16OptimizerMixin.state_dict": (
        "5da060f6579a98bf338a8188deedd28464a7204e724ab526024d1989ed441835",
        f"{_ADAPTER}.mixed_precision_state.state_dict"),
    "fairseq.optim.fp16_optimizer:_FP16OptimizerMixin.load_state_dict": (
        "04a88bf4795eb98f99cee8b0666825711cbef059483dca1619ac1238738545db",
        f"{_ADAPTER}.mixed_precision_state.load_state_dict"),
    "fairseq.optim.dynamic_loss_scaler:DynamicLossScaler": (
        "a45ad91c1f23ddd231549105287df0d9b92811eee10d785b7592b33fcd5de796",
        f"{_ADAPTER}.mixed_precision_state.SCALER_COUNTERS (the loss scaler's counters)"),
    "fairseq.data.iterators:EpochBatchIterator.state_dict": (
        "9ca3004ba26d627989b67713279f27cb4e670e4daa97f94ca141d8584343e5a4",
        f"{_ADAPTER}.iterator_position.state_dict"),
    "fairseq.data.iterators:EpochBatchIterator.load_state_dict": (
        "a0f27922a05bd774fe5ff12711671250d24d209e59ace7a223d67209e15ba52c",
        f"{_ADAPTER}.iterator_position.load_state_dict"),
    "fairseq.trainer:Trainer.lr_step_update": (
        "18c85451355c1637094e514c457f4a26275120d40daaa9d92548ffd963bd920d",
        f"{_ADAPTER}.lr_names.lr_step_update"),
    "fairseq.optim.composite:FairseqCompositeOptimizer.__init__": (
        "59e97e26ecb304f73b0916a107ab6171bdea0f9c7fb7e08c308e9af5e6f21746",
        f"{_ADAPTER}.lr_names.composite_group_key (how the composite optimizer keys its groups)"),
    "fairseq.optim.adam:Adam.step": (
        "17702f9597e41a111d8fafd2cbe6eac3f5ba8aa637e4be53fab0efb0336c326c",
        f"{_ADAPTER}.adam.foreach_step"),
    "fairseq.utils:clip_grad_norm_": (
        "0e9a45d266e1945634315f8ec6bdaea07044a540fe6cb905e1bd15816f538d73",
        f"{_ADAPTER}.mixed_precision_speed.clip_grad_norm_"),
    "fairseq.optim.fp16_optimizer:_FP16OptimizerMixin._sync_fp16_grads_to_fp32": (
        "9a06568699ab4d06d2ec82cd0402fd4524a798b1d52479097d86632112066cf5",
        f"{_ADAPTER}.mixed_precision_speed.sync_fp16_grads_to_fp32"),
    "fairseq.optim.fp16_optimizer:_FP16OptimizerMixin._sync_fp32_params_to_fp16": (
        "a53fdba609963e2dcd6b69db668113a09e9f128bdf369baee47d4d5c8ecb6f95",
        f"{_ADAPTER}.mixed_precision_speed.sync_fp32_params_to_fp16"),
    "fairseq.optim.fp16_optimizer:_FP16OptimizerMixin.zero_grad": (
        "82e360fb470d16e31bc29c798bfbdbced98813c17b31c184d25f85e1b763348a",
        f"{_ADAPTER}.mixed_precision_speed.zero_grad"),
    "fairseq.optim.fp16_optimizer:_FP16OptimizerMixin.clip_grad_norm": (
        "758da07efcfb74790d6be758433163b9c2d829340451f15c9aa41e1ab8ae8b28",
        f"{_ADAPTER}.mixed_precision_speed (the fields _needs_sync, _multiply_factor)"),
    "fairseq.data.iterators:BufferedIterator": (
        "48ff1a85939fa976c95acf3fe84453923ced968fb2b3e9f185d035647c84b074",
        "sslam_plugin.training.data_loading (the fields _consumer, _queue, _iterable)"),
    "fairseq.data.iterators:BackgroundConsumer": (
        "08fbef31dfd510c60d22f1808d6d2adf4586a009b1a4507b77a4cc699abc6cfa",
        "sslam_plugin.training.data_loading (the field _max_len)"),
    "fairseq.data.iterators:CountingIterator.__init__": (
        "3ec5142a11b46385dc5db56b181bef715bed1a8a87066ae61a252c4e2abb416d",
        "sslam_plugin.training.data_loading (the field _itr)"),
    "fairseq.data.iterators:EpochBatchIterator.__init__": (
        "5081fc126993b3ea41a43faa3fe240f17ae42cff5efaeccd26a4a778228960ad",
        "sslam_plugin.training.data_loading (the fields _cur_epoch_itr, _next_epoch_itr, dataloader)"),
}


def _resolve(target: str) -> object:
    """The pinned fairseq object; fairseq's own where the adapter replaced it."""
    module_name, _, path = target.partition(":")
    for key, where in TARGETS.items():
        if where == (module_name, path):
            return inspect.unwrap(original(key))
    obj: object = importlib.import_module(module_name)
    for part in path.split("."):
        obj = getattr(obj, part)
    return inspect.unwrap(obj)  # type: ignore[arg-type]


def source_sha256(target: str) -> str:
    """sha256 of the source of ``"module:qualified name"`` in the installed fairseq."""
    return hashlib.sha256(inspect.getsource(_resolve(target)).encode("utf-8")).hexdigest()


def changed_sources() -> List[str]:
    """One line per pinned fairseq code that differs from the pin: what changed and what to review."""
    changed = []
    for target, (expected, review) in PINNED.items():
        try:
            actual = source_sha256(target)
        except (ImportError, AttributeError, OSError, TypeError) as err:
            changed.append(f"{target} is gone from the installed fairseq ({err}): review {review}")
            continue
        if actual != expected:
            changed.append(f"{target} changed in the installed fairseq (sha256 {actual[:12]}, pinned "
                           f"{expected[:12]}): review {review}, then update its pin")
    return changed
