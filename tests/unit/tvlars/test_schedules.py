"""The paper's LARS warm-up → cosine schedule against the official adjust_learning_rate."""

from __future__ import annotations

import pytest
import torch

from tvlars import LARS
from tvlars.schedules import WarmupCosine, paper_lr, warmup_cosine_factor
from tvlars.testing.official import official_warmup_lr


def test_matches_official_schedule_step_by_step():
    epochs, per_epoch, bs, lr = 100, 3, 4096, 0.3
    p = torch.nn.Parameter(torch.ones(2, 2))
    opt = LARS([p], lr=paper_lr(lr, bs))
    sched = WarmupCosine(opt, warmup_steps=20 * per_epoch, total_steps=epochs * per_epoch)
    for step in range(epochs * per_epoch):
        official = official_warmup_lr(lr, bs, step, per_epoch, epochs)
        assert opt.param_groups[0]["lr"] == pytest.approx(official, rel=1e-12)
        p.grad = torch.ones(2, 2)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(paper_lr(lr, bs) * 1e-3)


def test_state_dict_round_trip_resumes_mid_schedule():
    p = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = WarmupCosine(opt, warmup_steps=5, total_steps=50, final_ratio=0.01)
    for _ in range(17):
        opt.step()
        sched.step()
    saved = sched.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    sched2 = WarmupCosine(opt2, warmup_steps=1, total_steps=2)
    sched2.load_state_dict(saved)
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert opt2.param_groups[0]["lr"] == pytest.approx(warmup_cosine_factor(18, 5, 50, 0.01))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"warmup_steps": -1, "total_steps": 10}, r"Invalid warmup_steps: -1"),
        ({"warmup_steps": 20, "total_steps": 10}, r"Invalid total_steps: 10"),
        ({"warmup_steps": 2, "total_steps": 10, "final_ratio": 2.0}, r"Invalid final_ratio: 2\.0"),
    ],
)
def test_errors(kwargs, match):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    with pytest.raises(ValueError, match=match):
        WarmupCosine(opt, **kwargs)


def test_no_warmup_starts_at_base_lr():
    assert warmup_cosine_factor(0, 0, 10) == 1.0
    assert warmup_cosine_factor(10, 0, 10) == pytest.approx(1e-3)
