"""The comparison protocol's rules in the expanded study specs: no pruning without peers, the epoch budget binding,
reference points first, TVLARS's schedule in units of training, tuning repeats, and the range check's arithmetic."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from search_spaces.comparison import (
    EXTENSION_SEED_STRIDE,
    MAX_BATCH_SIZES,
    REPEAT_SEED_STRIDE,
    ComparisonSpec,
    expand,
    extension_spec,
    range_check,
)
from search_spaces.spec import StudySpec
from tvlars.optim import get_optimizer
from tvlars.train import TrialConfig, run


def reference_lam_steps(batch_size: int) -> float:
    """TVLARS's official λ in units of training, as its declaration gives it."""
    return get_optimizer("tvlars").reference(batch_size)["lam_steps"]


def _spec(**over):
    data = {
        "name": "cmp",
        "workload": {"dataset": "mnist1d", "model": "mlp", "epochs": 10},
        "arms": [{"optimizer": "tvlars"}, {"optimizer": "lars_warmup"}, {"optimizer": "lars"}, {"optimizer": "lamb"}],
        "batch_sizes": [128, 512, 2048],
        "budget": {"epochs": 50},
    }
    data.update(over)
    return ComparisonSpec.model_validate(data)


@pytest.mark.parametrize("name", ["asha", "median", "pbt"])
@pytest.mark.parametrize("at_once", [1, 4])
def test_pruning_whose_rungs_do_not_compare_peers_is_refused_with_the_reason(name, at_once):
    with pytest.raises(ValidationError) as e:
        _spec(scheduler={"name": name, "grace_period": 2}, budget={"epochs": 50, "max_concurrent": at_once})
    (err,) = e.value.errors()
    assert err["loc"] == ("scheduler",)
    assert f"{name!r} cannot prune a comparison's trials" in err["msg"]
    assert f"with max_concurrent {at_once}, the first trial has no peer" in err["msg"]
    assert "'hyperband'" in err["msg"]


def test_no_early_stopping_by_default_and_the_epoch_budget_sets_the_trial_count():
    spec = _spec()
    assert spec.scheduler.name == "none"
    for s in expand(spec):
        assert s.spec["scheduler"]["name"] == "none"
        assert s.spec["budget"] == {"n_trials": 5, "epochs": 50, "max_concurrent": 1, "max_failed": 3}
    # synchronous HyperBand compares peers: allowed, with as many trials as its first rung pays for
    hb = _spec(scheduler={"name": "hyperband", "grace_period": 2})
    assert hb.n_trials == 25 and expand(hb)[0].spec["budget"]["n_trials"] == 25
    # an explicit n_trials still caps; without epochs, epochs follow from it
    assert _spec(budget={"n_trials": 3}).epoch_budget == 30


def test_every_arm_starts_from_its_reference_point_and_tvlars_also_from_lambda_zero():
    spec = _spec()
    for s in expand(spec):
        parsed = StudySpec.model_validate(s.spec)
        lr = s.spec["search_space"]["lr"]
        centre = math.sqrt(lr["low"] * lr["high"])
        official = parsed.enqueue[0]
        assert official["lr"] == pytest.approx(centre, rel=1e-5)
        if s.arm.optimizer == "tvlars":
            lam_zero = parsed.enqueue[1]
            assert len(parsed.enqueue) == 2
            assert official == {
                "lr": official["lr"],
                "lam_steps": reference_lam_steps(s.batch_size),
                "delay_fraction": 0.0,
            }
            # λ → 0: the bottom of lam_steps' range, no delay: TVLARS trains as LARS at lr / (α + 1)
            assert lam_zero == {"lr": official["lr"], "lam_steps": 0.05, "delay_fraction": 0.0}
        else:
            assert parsed.enqueue == [{"lr": official["lr"]}]
        # each point is a config the trainer takes (only keys its optimizer takes)
        for point in parsed.enqueue:
            TrialConfig.from_dict(parsed.trial_config(point))
    # the official λ in units of training: the paper grid's geometric mean × the paper's total steps
    lam512 = math.exp(sum(math.log(x) for x in (1e-6, 1e-5, 1e-4, 1e-3)) / 4)
    assert reference_lam_steps(512) == pytest.approx(lam512 * 100 * math.ceil(50_000 / 512), rel=1e-5)
    assert reference_lam_steps(128) == reference_lam_steps(512)  # held constant below the paper's ladder


def test_tvlars_arms_search_their_schedule_in_units_of_training():
    for s in expand(_spec()):
        space, fixed = s.spec["search_space"], s.spec["fixed"]
        if s.arm.optimizer == "tvlars":
            assert space["lam_steps"] == {"type": "float", "low": 0.05, "high": 50.0, "log": True}
            assert space["delay_fraction"] == {"type": "float", "low": 0.0, "high": 0.5, "log": False}
            assert not {"lam", "delay_epochs"} & set(fixed)  # exclusive with the units of training
        else:
            assert not {"lam_steps", "delay_fraction", "lam", "delay_epochs"} & (set(space) | set(fixed))


@pytest.mark.parametrize("batch_size", [128, 2048])
def test_equal_lam_steps_give_the_same_phi_over_training_progress(batch_size):
    """Two epochs of the trainer at two batch sizes: φ at the end of training is the same function of lam_steps."""
    rows = []
    config = {
        "dataset": "mnist1d",
        "model": "mlp",
        "optimizer": "tvlars",
        "epochs": 2,
        "batch_size": batch_size,
        "lr": 1.0,
        "lam_steps": 3.0,
        "delay_fraction": 0.0,
        "alpha": 0.1,
    }
    run(config, rows.append)
    steps = rows[-1]["step"]
    # φ after the last step t = steps: 1 / (α + exp(λ t)) with λ = lam_steps / steps: 1 / (0.1 + e^3)
    assert rows[-1]["phi"] == pytest.approx(1 / (0.1 + math.exp(3.0 * steps / steps)), rel=1e-3)


def test_tuning_repeats_use_other_seeds_the_same_in_every_arm():
    spec = _spec(tuning_repeats=3, sampler={"name": "random", "seed": 7}, seed=3)
    studies = expand(spec)
    assert len(studies) == 3 * 4 * 3
    seen = {}
    for s in studies:
        key = (s.repeat, s.batch_index)
        seeds = (s.spec["sampler"]["seed"], s.spec["seed"])
        assert seen.setdefault(key, seeds) == seeds  # identical across arms
        assert seeds == (7 + s.repeat * MAX_BATCH_SIZES + s.batch_index, 3 + s.repeat * REPEAT_SEED_STRIDE)
        assert s.spec["name"] == f"cmp-{s.arm.name}-bs{s.batch_size}-t{s.repeat}"
    assert len(set(seen.values())) == 9  # no two tunings share a seed


def test_range_check_marks_optima_in_the_outer_tenth_of_a_range_log_or_linear():
    space = {
        "lr": {"type": "float", "low": 0.1, "high": 10.0, "log": True},
        "lam_steps": {"type": "float", "low": 0.05, "high": 50.0, "log": True},
        "delay_fraction": {"type": "float", "low": 0.0, "high": 0.5, "log": False},
    }
    checked = range_check(space, {"lr": 10**0.85, "lam_steps": 0.06, "delay_fraction": 0.5})
    assert set(checked) == {"lr", "lam_steps", "delay_fraction"}  # linear ranges are checked too
    assert checked["lr"]["position"] == pytest.approx(0.925) and checked["lr"]["edge"] == "high"
    assert checked["lam_steps"]["edge"] == "low" and checked["lam_steps"]["extendable"]
    # delay_fraction at 0.5 can widen to its hard bound 1.0; at 0 it is at the bound: a flagged edge only
    assert checked["delay_fraction"]["edge"] == "high" and checked["delay_fraction"]["extendable"]
    at_zero = range_check(space, {"delay_fraction": 0.0})["delay_fraction"]
    assert at_zero["edge"] == "low" and not at_zero["extendable"]
    inside = range_check(space, {"lr": 10**0.75, "lam_steps": 0.05 * 10**0.31, "delay_fraction": 0.25})
    assert all(c["edge"] is None for c in inside.values())


def test_an_extension_widens_edge_ranges_one_decade_and_keeps_the_others():
    tuned = expand(_spec())[0].spec
    ext = extension_spec(tuned, {"lr": "high", "lam_steps": "low", "delay_fraction": "low"})
    StudySpec.model_validate(ext)
    lr, lam = tuned["search_space"]["lr"], tuned["search_space"]["lam_steps"]
    assert ext["search_space"]["lr"]["low"] == pytest.approx(lr["low"])  # widened, not moved
    assert ext["search_space"]["lr"]["high"] == pytest.approx(lr["high"] * 10)
    assert ext["search_space"]["lam_steps"] == {**lam, "low": 0.005}
    assert ext["search_space"]["delay_fraction"] == tuned["search_space"]["delay_fraction"]  # at its hard bound
    assert ext["budget"] == tuned["budget"]  # a tuning study's trials and epochs
    assert ext["name"] == tuned["name"] + "-x1" and ext["enqueue"] == []
    assert ext["seed"] == tuned["seed"] + EXTENSION_SEED_STRIDE and ext["sampler"]["seed"] != tuned["sampler"]["seed"]
    # the second extension widens the first's ranges again, with seeds below the next repeat's
    ext2 = extension_spec(tuned, {"lr": "high"}, 2, ext["search_space"])
    assert ext2["search_space"]["lr"]["high"] == pytest.approx(lr["high"] * 100) and ext2["name"].endswith("-x2")
    assert tuned["seed"] < ext["seed"] < ext2["seed"] < tuned["seed"] + REPEAT_SEED_STRIDE
    # an arm with nothing on the edge gets the same budget over its unchanged space
    same = extension_spec(tuned, {})
    assert same["search_space"] == tuned["search_space"] and same["budget"] == ext["budget"]
