"""The optimizers the trainer builds from each paper preset's settings match the official loops (float64, 1e-6)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import search_spaces
from tvlars.testing.cases import TinyNet, assert_same_parameters, batches, step_together
from tvlars.testing.official import OfficialLAMB, OfficialLARS, OfficialTVLARS, official_warmup_lr
from tvlars.train import TrialConfig, build_optimizer

BATCH_SIZES = (512, 1024, 2048, 4096, 8192, 16384, 32768)
STEPS = 40
STEPS_PER_EPOCH = 1  # 100 steps in all: the 40 cover LARS's 20-step warm-up and the start of the cosine


def _preset_config(name: str) -> tuple[dict, TrialConfig]:
    spec = search_spaces.load_spec(name)
    # the grid's first LR (and lambda): at its largest LRs this 5-layer net's BatchNorm biases grow into the
    # thousands within 40 steps and amplify float64 rounding past 1e-6 (measured: 7e-5 at lr 30, 7e-8 at lr 12)
    config = spec.trial_config(spec.lower_corner())
    return config, TrialConfig.from_dict(config)


def _official(kind: str, config: dict, model: nn.Module):
    if kind == "tvlars":
        return OfficialTVLARS(model.parameters(), lr=config["lr"], lmbda=config["lam"])
    if kind == "lars":
        return OfficialLARS(model.parameters(), lr=config["lr"])
    if kind == "lars-warmup":
        return OfficialLARS(model.parameters(), lr=0.0)
    return OfficialLAMB(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])


@pytest.mark.parametrize("bs", BATCH_SIZES)
@pytest.mark.parametrize("kind", ["tvlars", "lars", "lars-warmup", "lamb"])
def test_trainer_built_optimizer_matches_the_official_loop(kind, bs):
    config, cfg = _preset_config(f"paper-cifar10-resnet18-bs{bs}-{kind}")
    torch.manual_seed(0)
    ours_model = TinyNet(big_weight=True).double()
    official_model = copy.deepcopy(ours_model)
    ours, sched = build_optimizer(cfg, ours_model, steps_per_epoch=STEPS_PER_EPOCH)
    official = _official(kind, config, official_model)
    assert (sched is not None) == (kind == "lars-warmup")
    if kind == "lamb":  # the official LAMB adapts and decays every tensor, biases and BatchNorm included
        assert all(g["adapt"] and g["weight_decay"] == config["weight_decay"] for g in ours.param_groups)
    for step, (x, y) in enumerate(batches(STEPS, torch.float64, seed=1)):
        if kind == "lars-warmup":
            official.lr = official_warmup_lr(config["lr"], bs, step, STEPS_PER_EPOCH, config["epochs"])
            assert ours.param_groups[0]["lr"] == pytest.approx(official.lr, rel=1e-12, abs=1e-15)
        step_together(((ours_model, ours), (official_model, official)), x, y)
        if sched is not None:
            sched.step()
    assert_same_parameters(official_model, ours_model, rtol=1e-6, atol=1e-6)
    torch.manual_seed(0)
    assert not torch.allclose(ours_model.head.weight, TinyNet(big_weight=True).double().head.weight)  # it trained


def test_exclude_1d_false_used_to_leave_biases_plain():
    # the bug this suite guards: with exclude_1d false every `.bias` still went to the plain group
    _, cfg = _preset_config("paper-cifar10-resnet18-bs1024-lamb")
    opt, _ = build_optimizer(cfg, nn.Linear(4, 2), steps_per_epoch=1)
    assert [len(g["params"]) for g in opt.param_groups] == [2]


def test_lamb_adam_mode_matches_the_official_adam_flag():
    torch.manual_seed(0)
    ours_model = TinyNet(big_weight=True).double()
    official_model = copy.deepcopy(ours_model)
    cfg = TrialConfig.from_dict(
        {
            "optimizer": "lamb",
            "lr": 0.01,
            "weight_decay": 1e-3,
            "bias_correction": False,
            "norm_clip": 10.0,
            "exclude_1d": False,
            "trust_ratio": False,
        }  # fmt: skip
    )
    ours, _ = build_optimizer(cfg, ours_model, steps_per_epoch=1)
    official = OfficialLAMB(official_model.parameters(), lr=0.01, weight_decay=1e-3, adam=True)
    for x, y in batches(STEPS, torch.float64, seed=2):
        step_together(((ours_model, ours), (official_model, official)), x, y)
    assert_same_parameters(official_model, ours_model, rtol=1e-6, atol=1e-6)
    assert float(ours.last_trust_ratio) == 1.0
