"""Every sampler and scheduler the spec offers works through Optuna's ask/tell (through the engine on Ray:
tests/integration/service/engine/test_samplers_schedulers.py)."""

from __future__ import annotations

import inspect

import optuna
import pytest
from optuna.trial import TrialState

from search_spaces.algorithms import SAMPLERS, SCHEDULERS
from search_spaces.spec import StudySpec
from service.engine import build_distributions, build_sampler
from service.engine.factories import SAMPLER_CLASSES
from service.errors import InvalidSpecError
from service.testing.specs import quick_spec

SPACE = {
    "lr": {"type": "float", "low": 1.0, "high": 20.0, "log": True},
    "delay_epochs": {"type": "int", "low": 0, "high": 4},
    "exclude_1d": {"type": "categorical", "choices": [True, False]},
}


@pytest.mark.parametrize("name", ["tpe", "random", "cmaes", "gp", "qmc", "nsga2"])
def test_each_sampler_asks_inside_the_space(name):
    data = quick_spec("s", sampler={"name": name, "seed": 3})
    data["search_space"] = SPACE
    spec = StudySpec.model_validate(data)
    study = optuna.create_study(sampler=build_sampler(spec), direction="maximize")
    dists = build_distributions(spec)
    for i in range(8):
        trial = study.ask(dists)
        assert 1.0 <= trial.params["lr"] <= 20.0 and trial.params["delay_epochs"] in range(5)
        study.tell(trial, float(i % 3))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 8


def test_sampler_options_are_checked_by_the_spec():
    data = quick_spec("s", sampler={"name": "tpe", "options": {"n_startup": 3}})
    with pytest.raises(ValueError, match="tpe sampler: unknown option 'n_startup'"):
        StudySpec.model_validate(data)
    data = quick_spec("s", sampler={"name": "tpe", "options": {"n_startup_trials": "three"}})
    with pytest.raises(ValueError, match="option 'n_startup_trials'"):
        StudySpec.model_validate(data)


def test_a_value_the_sampler_refuses_is_an_invalid_spec():
    data = quick_spec("s", sampler={"name": "nsga2", "options": {"population_size": 1}})
    with pytest.raises(ValueError, match="option 'population_size': Input should be greater than or equal to 2"):
        StudySpec.model_validate(data)  # the options' bounds refuse it at submit
    spec = StudySpec.model_validate(quick_spec("s", sampler={"name": "nsga2"}))
    spec.sampler.options = {"population_size": 1}  # a spec stored before the bounds: the engine still refuses it
    with pytest.raises(InvalidSpecError, match="sampler.options do not fit the nsga2 sampler"):
        build_sampler(spec)


@pytest.mark.parametrize(("kind", "table"), [("sampler", SAMPLERS), ("scheduler", SCHEDULERS)])
def test_every_listed_option_is_a_constructor_parameter(kind, table):
    """The table in search_spaces.algorithms and the classes the engine builds agree, option by option."""
    from ray.tune.schedulers import (
        AsyncHyperBandScheduler,
        HyperBandScheduler,
        MedianStoppingRule,
        PopulationBasedTraining,
    )

    classes = (
        {**SAMPLER_CLASSES, "grid": optuna.samplers.GridSampler}
        if kind == "sampler"
        else {
            "asha": AsyncHyperBandScheduler,
            "hyperband": HyperBandScheduler,
            "pbt": PopulationBasedTraining,
            "median": MedianStoppingRule,
        }
    )
    assert set(classes) == set(table) - {"none"}
    for name, cls in classes.items():
        accepted = set(inspect.signature(cls.__init__).parameters)
        assert set(table[name].options) <= accepted, (name, set(table[name].options) - accepted)
