"""The comparison's default sampler: scrambled Sobol' points in the spec's dimension order (lr first), one scramble
per repeat, the same lr quantiles in every arm, enqueued trials using no point."""

from __future__ import annotations

import math

import optuna
import pytest

from search_spaces.comparison import expand, load_comparison_preset
from search_spaces.spec import StudySpec
from service.engine.factories import build_distributions, build_sampler
from service.engine.sobol import SobolSampler, from_unit

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _quantile(value: float, p: dict) -> float:
    return (math.log(value) - math.log(p["low"])) / (math.log(p["high"]) - math.log(p["low"]))


def _drawn_lr_quantiles(spec: StudySpec, n: int, enqueue: bool = True) -> list[float]:
    """Ask the study for its enqueued points and ``n`` drawn ones (as the engine does); the drawn lr quantiles."""
    study = optuna.create_study(sampler=build_sampler(spec), direction="maximize")
    if enqueue:
        for point in spec.enqueue or []:
            study.enqueue_trial(point)
    out, skip = [], len(spec.enqueue or []) * enqueue
    for i in range(skip + n):
        trial = study.ask(build_distributions(spec))
        if i >= skip:  # the enqueued points come first
            out.append(_quantile(trial.params["lr"], spec.search_space["lr"].model_dump()))
        study.tell(trial, 0.5)
    return out


@pytest.fixture(scope="module")
def studies() -> list:
    return expand(load_comparison_preset("compare-quick"))


def test_comparisons_default_to_sobol_and_every_arm_draws_the_same_lr_quantiles(studies) -> None:
    repeat0 = [s for s in studies if s.repeat == 0 and s.batch_size == 64]
    tvlars, lars = (StudySpec.model_validate(s.spec) for s in repeat0)
    assert tvlars.sampler.name == lars.sampler.name == "sobol"
    assert list(tvlars.search_space) == ["lr", "lam_steps", "delay_fraction"] and list(lars.search_space) == ["lr"]
    assert len(tvlars.enqueue or []) == 2 and len(lars.enqueue or []) == 1  # different numbers of reference points
    a, b = _drawn_lr_quantiles(tvlars, 8), _drawn_lr_quantiles(lars, 8)
    assert a == pytest.approx(b, abs=1e-9)
    # a Sobol' net: the first 4 points fall one in each quarter of the lr range, the first 8 one in each eighth
    assert sorted(int(q * 4) for q in a[:4]) == [0, 1, 2, 3]
    assert sorted(int(q * 8) for q in a[:8]) == list(range(8))


def test_enqueued_points_use_no_sobol_index_and_repeats_scramble_apart(studies) -> None:
    tvlars = StudySpec.model_validate(studies[0].spec)
    assert _drawn_lr_quantiles(tvlars, 4, enqueue=True) == pytest.approx(_drawn_lr_quantiles(tvlars, 4, enqueue=False))
    other_repeat = next(s for s in studies if s.repeat == 1 and s.arm.name == "tvlars" and s.batch_size == 64)
    assert _drawn_lr_quantiles(StudySpec.model_validate(other_repeat.spec), 4) != pytest.approx(
        _drawn_lr_quantiles(tvlars, 4)
    )


def test_a_dimension_does_not_depend_on_how_many_follow_it() -> None:
    one, three = SobolSampler(seed=7, order=["lr"]), SobolSampler(seed=7, order=["lr", "b", "c"])
    assert [one.unit(i, 0) for i in range(40)] == [three.unit(i, 0) for i in range(40)]
    assert one.unit(3, 0) != SobolSampler(seed=8).unit(3, 0)


def test_from_unit_maps_onto_each_distribution() -> None:
    dists = optuna.distributions
    assert from_unit(0.5, dists.FloatDistribution(0.01, 1.0, log=True)) == pytest.approx(0.1)
    assert from_unit(0.0, dists.FloatDistribution(0.0, 0.5)) == 0.0
    assert from_unit(0.999, dists.IntDistribution(1, 4)) == 4
    assert from_unit(0.3, dists.CategoricalDistribution(["a", "b", "c"])) == "a"
    assert from_unit(0.99, dists.FloatDistribution(0.0, 1.0, step=0.25)) == 1.0
