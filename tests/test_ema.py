import pytest
import torch

from sslam_plugin.models.ema import EMATeacher, ema_decay_at
from sslam_plugin.models import BootstrapPretrainer

from conftest import tiny_config


def test_decay_schedule_is_linear_then_constant():
    assert ema_decay_at(0, 0.9998, 0.99999, 100000) == pytest.approx(0.9998)
    assert ema_decay_at(50000, 0.9998, 0.99999, 100000) == pytest.approx((0.9998 + 0.99999) / 2)
    assert ema_decay_at(100000, 0.9998, 0.99999, 100000) == 0.99999
    assert ema_decay_at(250000, 0.9998, 0.99999, 100000) == 0.99999


def test_update_is_decay_old_plus_rest_new():
    student = torch.nn.Linear(3, 2)
    teacher = EMATeacher(student)
    old = {k: v.clone() for k, v in teacher.encoder.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student, 0.9)
    for name, param in student.named_parameters():
        expected = 0.9 * old[name] + 0.1 * param
        assert torch.allclose(teacher.encoder.state_dict()[name], expected)


def test_teacher_stays_float32_and_has_no_gradients():
    model = BootstrapPretrainer(tiny_config())
    model.half()
    assert next(model.encoder.parameters()).dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in model.teacher.parameters())
    assert not any(p.requires_grad for p in model.teacher.parameters())
    model.train()
    assert not model.teacher.training


def test_ema_step_uses_the_scheduled_decay():
    model = BootstrapPretrainer(tiny_config(ema_decay=0.5, ema_end_decay=1.0, ema_anneal_end_step=10))
    with torch.no_grad():
        model.encoder.cls_token.fill_(1.0)
        model.teacher.encoder.cls_token.fill_(0.0)
    model.ema_step(5)  # decay 0.75
    assert model.ema_decay == pytest.approx(0.75)
    assert torch.allclose(model.teacher.encoder.cls_token, torch.full_like(model.teacher.encoder.cls_token, 0.25))
    model.ema_step(10)  # decay 1.0: the teacher is frozen
    assert torch.allclose(model.teacher.encoder.cls_token, torch.full_like(model.teacher.encoder.cls_token, 0.25))
