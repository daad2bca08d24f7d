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
        for opt in ("tvlars", "lars-warmup", "lamb"):
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


def test_overrides_and_unknown_preset():
    spec = search_spaces.load_spec("mnist1d-quick", {"name": "mine", "budget": {"n_trials": 4}})
    assert spec.name == "mine" and spec.budget.n_trials == 4 and spec.budget.max_concurrent == 2  # merged
    data = search_spaces.resolve(
        {"preset": "mnist1d-quick", "search_space": {"lr": {"type": "float", "low": 1, "high": 2}}}
    )
    assert list(data["search_space"]) == ["lr"]  # a search space override replaces the whole space
    with pytest.raises(KeyError, match="Unknown preset: 'nope'"):
        search_spaces.load("nope")
