"""Spec validation: every malformed spec we can think of is refused with a message naming the problem."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from search_spaces import merge
from search_spaces.spec import StudySpec
from service.testing.specs import quick_spec


def test_quick_spec_is_valid_and_builds_trial_configs():
    spec = StudySpec.model_validate(quick_spec("ok"))
    config = spec.trial_config({"lr": 2.0, "lam": 1e-3}, trial_seed=7)
    assert config["lr"] == 2.0 and config["seed"] == 7 and config["optimizer"] == "tvlars"
    assert config["dataset"] == "mnist1d" and config["weight_decay"] == 5e-4
    assert spec.canonical()["budget"]["n_trials"] == 6


BAD = [
    ({"name": "has space"}, "name", "should match pattern"),
    ({"name": ""}, "name", "should match pattern"),
    ({"name": "x" * 200}, "name", "should match pattern"),
    ({"workload": {"dataset": "imagenet"}}, "workload.dataset", "unknown dataset 'imagenet'"),
    ({"workload": {"model": "vit"}}, "workload.model", "unknown model 'vit'"),
    ({"workload": {"epochs": 0}}, "workload.epochs", "greater than or equal to 1"),
    ({"workload": {"batch_size": "big"}}, "workload.batch_size", "valid integer"),
    ({"workload": {"optimiser": "x"}}, "", "unknown trial config key 'optimiser'"),
    ({"optimizer": "adam"}, "optimizer", "unknown optimizer 'adam' is not installed"),
    ({"search_space": {}}, "search_space", "at least 1 item"),
    ({"search_space": {"lr": {"type": "float", "low": 5, "high": 1}}}, "search_space.lr.float", "must be <= high"),
    ({"search_space": {"lr": {"type": "float", "low": 0, "high": 1, "log": True}}}, "search_space.lr.float", "low > 0"),
    ({"search_space": {"lr": {"type": "normal", "low": 0, "high": 1}}}, "search_space.lr", "does not match any"),
    (
        {"search_space": {"lr": {"type": "categorical", "choices": []}}},
        "search_space.lr.categorical.choices",
        "at least 1",
    ),
    ({"search_space": {"lr": {"type": "categorical", "choices": [1, 1]}}}, "search_space.lr.categorical", "unique"),
    ({"search_space": {"weight_decy": {"type": "float", "low": 0, "high": 1}}}, "search_space", "'weight_decay'?"),
    ({"search_space": {"seed": {"type": "int", "low": 1, "high": 2}}}, "search_space", "set by the spec itself"),
    ({"fixed": {"lr": 1.0}}, "", "lr both searched and set in fixed"),
    ({"fixed": {"batch_size": 10}}, "", "batch_size set in both workload and fixed"),
    ({"fixed": {"momentum": 1.5}}, "", "Invalid momentum: 1.5"),
    ({"objective": {"metric": "accuracy"}}, "objective", "Input should be"),
    ({"objective": [{"metric": "test_acc"}, {"metric": "test_acc"}]}, "", "distinct"),
    ({"objective": [{"metric": "test_acc"}, {"metric": "wall_seconds"}]}, "", "cannot prune"),
    ({"sampler": {"name": "bayes"}}, "sampler.name", "Input should be"),
    ({"sampler": {"name": "grid"}}, "", "continuous range has no grid"),
    ({"scheduler": {"name": "pb2"}}, "scheduler.name", "Input should be"),
    ({"scheduler": {"name": "hyperband"}, "fixed": {"checkpoint_every": 2}}, "", "checkpoint_every must be 1"),
    ({"scheduler": {"name": "asha", "reduction_factor": 1}}, "scheduler.reduction_factor", "greater than 1"),
    ({"scheduler": {"name": "asha", "grace_period": 50}}, "", "exceeds workload.epochs"),
    ({"budget": {"n_trials": 0}}, "budget.n_trials", "greater than or equal to 1"),
    ({"budget": {"n_trials": 10**6}}, "budget.n_trials", "less than or equal to 10000"),
    ({"budget": {"max_concurrent": 0}}, "budget.max_concurrent", "greater than or equal to 1"),
    ({"resources": {"gpu": -1}}, "resources.gpu", "greater than or equal to 0"),
    ({"resources": {"cpu": 0}}, "resources.cpu", "greater than 0"),
    ({"enqueue": [{"lr": 1000.0}]}, "", "enqueue[0]: lr=1000.0 is outside the search space"),
    ({"enqueue": [{"momentum": 0.5}]}, "", "enqueue[0]: momentum not in the search space"),
    ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("override", "loc", "message"), BAD, ids=[m for _, _, m in BAD])
def test_bad_specs(override, loc, message):
    data = merge(quick_spec("bad"), override)
    if "search_space" in override:
        data["search_space"] = override["search_space"]
    with pytest.raises(ValidationError) as info:
        StudySpec.model_validate(data)
    errors = info.value.errors()
    text = " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    assert message in text, text
    if loc:
        assert any(".".join(map(str, e["loc"])).startswith(loc) for e in errors), text


def test_grid_defaults_n_trials_to_grid_size_and_refuses_more():
    data = quick_spec(
        "grid",
        sampler={"name": "grid"},
        budget={"n_trials": None},
        search_space={
            "lr": {"type": "categorical", "choices": [1.0, 2.0]},
            "lam": {"type": "int", "low": 1, "high": 3},
        },
    )
    data["search_space"] = {
        "lr": {"type": "categorical", "choices": [1.0, 2.0]},
        "delay_epochs": {"type": "int", "low": 0, "high": 2},
    }
    assert StudySpec.model_validate(data).budget.n_trials == 6
    data["budget"]["n_trials"] = 7
    with pytest.raises(ValidationError, match="exceeds the grid's 6 points"):
        StudySpec.model_validate(data)
