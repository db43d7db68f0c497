"""A recipe's fp16 on a CPU is reported and replaced by float32; bf16 and GPU runs are left as asked."""

import logging

import pytest
import torch
from omegaconf import OmegaConf

pytest.importorskip("fairseq")

from sslam_plugin.training.run_setup import train_fp16_runs_in_float32_on_cpu  # noqa: E402


def common(**values):
    base = {"cpu": False, "fp16": False, "memory_efficient_fp16": False, "bf16": False}
    base.update(values)
    return OmegaConf.create({"common": base})


def test_fp16_on_a_cpu_trains_in_float32_and_says_so(caplog):
    cfg = common(cpu=True, fp16=True)
    with caplog.at_level(logging.WARNING):
        assert train_fp16_runs_in_float32_on_cpu(cfg)
    assert not cfg.common.fp16 and not cfg.common.memory_efficient_fp16
    assert "training in float32" in caplog.text and "common.bf16=true" in caplog.text


def test_memory_efficient_fp16_counts_as_fp16():
    cfg = common(cpu=True, memory_efficient_fp16=True)
    assert train_fp16_runs_in_float32_on_cpu(cfg)
    assert not cfg.common.memory_efficient_fp16


@pytest.mark.parametrize("values", [dict(cpu=True, bf16=True), dict(cpu=True), dict(cpu=False, fp16=True)])
def test_bf16_float32_and_gpu_runs_are_left_alone(values, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU case needs a GPU to be seen
    cfg = common(**values)
    before = OmegaConf.to_container(cfg)
    with caplog.at_level(logging.WARNING):
        assert not train_fp16_runs_in_float32_on_cpu(cfg)
    assert OmegaConf.to_container(cfg) == before and not caplog.text


def test_no_cuda_device_is_a_cpu_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = common(cpu=False, fp16=True)
    assert train_fp16_runs_in_float32_on_cpu(cfg) and not cfg.common.fp16
