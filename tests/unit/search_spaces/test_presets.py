"""Presets: every one validates; the paper grids enumerate exactly the official sweep scripts' grids."""

from __future__ import annotations

import itertools

import optuna
import pytest

import search_spaces
from search_spaces.spec import StudySpec
from service.engine import build_distributions, build_sampler
from tvlars.train import TrialConfig

# KhoiDOO/tvlars script/tvlars/script.json and script/lars/script.json, copied by hand
PAPER_LR = {
    512: [1.0, 2.0, 3.0],
    1024: [5.0, 8.0, 10.0],
    2048: [10.0, 12.0, 15.0],
    4096: [12.0, 15.0, 17.0, 20.0],
    8192: [12.0, 15.0, 17.0, 20.0, 25.0, 30.0],
    16384: [12.0, 15.0, 17.0, 20.0, 25.0, 30.0, 35.0],
    32768: [12.0, 15.0, 17.0, 20.0, 25.0, 30.0, 35.0],
}
_LAM = [0.000001, 0.00001, 0.0001, 0.001, 0.005, 0.01, 0.05]
PAPER_LAM = {512: _LAM[:4], 1024: _LAM[:5], 2048: _LAM[:6], **{b: _LAM for b in (4096, 8192, 16384, 32768)}}
WARMUP_LR = [0.1, 0.3, 0.5]


@pytest.mark.parametrize("name", search_spaces.names())
def test_every_preset_validates(name):
    spec = search_spaces.load_spec(name)
    assert spec.name == name
    TrialConfig.from_dict(spec.trial_config(spec.lower_corner()))
    assert spec.budget.n_trials >= 1


def test_expected_presets_exist():
    names = set(search_spaces.names())
    assert {"mnist1d-quick", "tvlars-default"} <= names
    for bs in PAPER_LR:
        for opt in ("tvlars", "lars", "lars-warmup", "lamb"):
            assert f"paper-cifar10-resnet18-bs{bs}-{opt}" in names


def _enumerate(spec: StudySpec) -> list[tuple]:
    study = optuna.create_study(sampler=build_sampler(spec), directions=spec.directions)
    dists = build_distributions(spec)
    seen = []
    for _ in range(spec.budget.n_trials):
        trial = study.ask(dists)
        seen.append(tuple(trial.params[k] for k in sorted(dists)))
        study.tell(trial, 0.5)
    return seen


@pytest.mark.parametrize("bs", sorted(PAPER_LR))
def test_paper_tvlars_grid_is_the_papers(bs):
    spec = search_spaces.load_spec(f"paper-cifar10-resnet18-bs{bs}-tvlars")
    seen = _enumerate(spec)
    expected = set(itertools.product(PAPER_LAM[bs], PAPER_LR[bs]))  # sorted keys: lam, lr
    assert len(seen) == len(expected) == spec.budget.n_trials  # each point exactly once
    assert set(seen) == expected
    assert spec.workload.batch_size == bs and spec.workload.epochs == 100
    assert spec.workload.dataset == "cifar10" and spec.workload.model == "resnet18"
    assert spec.fixed["alpha"] == 0.1 and spec.fixed["norm_clip"] == 10.0 and spec.fixed["delay_epochs"] == 0


@pytest.mark.parametrize("bs", sorted(PAPER_LR))
def test_paper_baseline_grids(bs):
    warm = search_spaces.load_spec(f"paper-cifar10-resnet18-bs{bs}-lars-warmup")
    assert warm.optimizer == "lars_warmup" and warm.fixed["warmup_epochs"] == 20
    assert sorted(_enumerate(warm)) == [(lr,) for lr in WARMUP_LR]
    lamb = search_spaces.load_spec(f"paper-cifar10-resnet18-bs{bs}-lamb")
    assert lamb.optimizer == "lamb" and lamb.fixed["bias_correction"] is False and lamb.fixed["norm_clip"] == 10.0
    assert len(set(_enumerate(lamb))) == 3


@pytest.mark.parametrize("bs", sorted(PAPER_LR))
def test_paper_lars_without_warmup_is_the_official_non_warm_grid(bs):
    spec = search_spaces.load_spec(f"paper-cifar10-resnet18-bs{bs}-lars")
    assert spec.optimizer == "lars" and "warmup_epochs" not in spec.fixed and "norm_clip" not in spec.fixed
    assert sorted(_enumerate(spec)) == [(lr,) for lr in PAPER_LR[bs]]  # non-warm: the TVLARS LR grid
    config = TrialConfig.from_dict(spec.trial_config(spec.lower_corner()))
    assert config.lr_schedule is None and config.warmup_epochs is None  # constant LR, no scaling


PAPER_PRESETS = [n for n in search_spaces.names() if n.startswith("paper-")]


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_set_the_official_protocol_and_say_so(name):
    spec = search_spaces.load_spec(name)
    config = spec.trial_config(spec.lower_corner())
    assert config["precision"] == "fp32" and config["ddp_devices"] == 4 and config["drop_last"] is False
    assert config["stem"] == "imagenet" and config.get("micro_batch_size") is None
    if config["task"] == "classification":
        assert config["rotation"] == 15.0
    # the paper's protocol (test accuracy) as the objective, said in the file; validation recorded too
    assert spec.objectives[0].metric in ("best_test_acc", "test_acc")
    text = (search_spaces._DIR / f"{name}.yaml").read_text()
    assert "# Protocol:" in text and "validation" in text
    assert TrialConfig.from_dict(config).val_fraction > 0


@pytest.mark.parametrize("name", ["mnist1d-quick", "tvlars-default"])
def test_the_tuning_presets_select_on_validation(name):
    spec = search_spaces.load_spec(name)
    assert spec.objectives[0].metric == "val_acc"
    assert TrialConfig.from_dict(spec.trial_config(spec.lower_corner())).val_fraction == 0.1


def test_tvlars_default_first_trial_is_the_official_setting():
    spec = search_spaces.load_spec("tvlars-default")
    config = spec.trial_config(spec.enqueue[0])
    assert config["norm_clip"] == 10.0 and config["stem"] == "imagenet" and config["rotation"] == 15.0
    assert config["alpha"] == 0.1 and config["delay_epochs"] == 0 and config["gamma_min"] == 0.0


def test_barlow_twins_presets_follow_the_official_self_supervised_script():
    for kind, optimizer in (("tvlars", "tvlars"), ("lars-warmup", "lars_warmup"), ("lamb", "lamb")):
        spec = search_spaces.load_spec(f"paper-cifar10-resnet18-bs1024-bt-{kind}")
        config = TrialConfig.from_dict(spec.trial_config(spec.lower_corner()))
        assert config.task == "barlow_twins" and config.optimizer == optimizer and config.projector_dims is None
    lamb = search_spaces.load_spec("paper-cifar10-resnet18-bs1024-bt-lamb")
    assert lamb.fixed["trust_ratio"] is False  # pytorch-lamb's adam mode, as the official BT run


def test_new_specs_select_on_validation_by_default():
    from search_spaces.spec import Objective

    assert Objective().metric == "val_acc" and Objective().direction == "maximize"
    with pytest.raises(ValueError, match="objective 'val_acc' needs a validation split: val_fraction is 0"):
        search_spaces.load_spec("mnist1d-quick", {"workload": {"val_fraction": 0}})


def test_overrides_and_unknown_preset():
    spec = search_spaces.load_spec("mnist1d-quick", {"name": "mine", "budget": {"n_trials": 4}})
    assert spec.name == "mine" and spec.budget.n_trials == 4 and spec.budget.max_concurrent == 2  # merged
    data = search_spaces.resolve(
        {"preset": "mnist1d-quick", "search_space": {"lr": {"type": "float", "low": 1, "high": 2}}}
    )
    assert list(data["search_space"]) == ["lr"]  # a search space override replaces the whole space
    with pytest.raises(KeyError, match="Unknown preset: 'nope'"):
        search_spaces.load("nope")
