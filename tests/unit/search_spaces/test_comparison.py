"""Comparison specs: strict validation with field errors, and expansion into study specs the study loader accepts."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from search_spaces.comparison import (
    DEFAULT_METRIC,
    RERUN_SEED_BASE,
    ComparisonSpec,
    default_lr_center,
    expand,
    list_comparison_presets,
    load_comparison_data,
    load_comparison_preset,
    lr_range,
    rerun_seeds,
)
from search_spaces.spec import StudySpec
from tvlars.train import TrialConfig


def _spec(**over):
    data = {
        "name": "cmp",
        "workload": {"dataset": "mnist1d", "model": "mlp", "epochs": 10},
        "arms": [{"optimizer": "tvlars"}, {"optimizer": "lars_warmup"}, {"optimizer": "lamb"}],
        "batch_sizes": [128, 512, 2048],
        "budget": {"n_trials": 4},
        "tuning_repeats": 1,  # one tuning per arm × batch size: these tests look at one repeat's studies
    }
    data.update(over)
    return data


def test_a_spec_repeats_its_tuning_three_times_unless_told():
    data = _spec()
    del data["tuning_repeats"]
    spec = ComparisonSpec.model_validate(data)
    assert spec.tuning_repeats == 3  # verdicts need MIN_REPEATS (2) repeats per arm; 3 as AlgoPerf's studies
    assert sorted({s.repeat for s in expand(spec)}) == [0, 1, 2] and len(expand(spec)) == 3 * 3 * 3


def test_tuning_repeats_as_a_range_run_in_rounds_and_primary_arms():
    spec = ComparisonSpec.model_validate(_spec(tuning_repeats={"min": 2, "max": 5}, primary=["lamb"]))
    assert (spec.repeats_min, spec.repeats_max, spec.margin) == (2, 5, 1.0)
    assert sorted({s.repeat for s in expand(spec)}) == [0, 1]  # the first round; the machine adds the others
    later = expand(spec, range(2, 3), [512])
    assert [(s.arm.name, s.batch_size, s.repeat) for s in later] == [
        ("tvlars", 512, 2), ("lars_warmup", 512, 2), ("lamb", 512, 2),
    ]  # fmt: skip
    assert later[0].spec["name"] == "cmp-tvlars-bs512-t2"
    assert spec.primary_labels == ["lamb"]
    one = ComparisonSpec.model_validate(_spec(tuning_repeats=4))
    assert (one.repeats_min, one.repeats_max, one.primary_labels) == (4, 4, ["lars_warmup", "lamb"])
    assert ComparisonSpec.model_validate(one.canonical()) == one  # round trip of the stored spec
    assert ComparisonSpec.model_validate(spec.canonical()) == spec


def _errors(data) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as e:
        ComparisonSpec.model_validate(data)
    return [(".".join(map(str, err["loc"])), err["msg"]) for err in e.value.errors()]


@pytest.mark.parametrize("name", list_comparison_presets())
def test_every_comparison_preset_expands_to_valid_study_specs(name):
    spec = load_comparison_preset(name)
    studies = expand(spec)
    assert len(studies) == len(spec.arms) * len(spec.batch_sizes) * spec.repeats_min  # the first round
    for study in studies:
        parsed = StudySpec.model_validate(study.spec)  # the existing loader's model, unchanged
        TrialConfig.from_dict(parsed.trial_config(parsed.lower_corner()))
        assert parsed.workload.batch_size == study.batch_size
        assert parsed.budget.n_trials == spec.n_trials
        assert parsed.scheduler.name == "none" and parsed.budget.epochs == spec.epoch_budget
        assert study.spec["enqueue"], "every arm starts from its reference point"
        assert study.epoch_budget == spec.epoch_budget


def test_mnist1d_cpu_has_a_primary_contrast_and_the_steps_the_issue_asks_at_both_batch_sizes():
    assert {"compare-mnist1d-cpu", "compare-quick", "compare-cifar10-resnet18"} <= set(list_comparison_presets())
    spec = load_comparison_preset("compare-mnist1d-cpu")
    assert [(a.name, a.optimizer) for a in spec.arms] == [
        ("tvlars", "tvlars"),
        ("lars_warmup", "lars_warmup"),
        ("lars", "lars"),  # secondary: reported uncorrected
    ]
    assert spec.primary_labels == ["lars_warmup"] and spec.margin == 1.0
    from tvlars.data import load_dataset, validation_split
    from tvlars.train import TrialConfig

    cfg = TrialConfig.from_dict({**spec.workload.model_dump(), "batch_size": 1, "optimizer": "tvlars"})
    data = load_dataset("mnist1d", **cfg.dataset_options)
    assert len(data.train_y) >= 20_000 and spec.workload.model_dump()["model"] == "cnn"
    train_rows, _ = validation_split(data.train_y, cfg.val_fraction, cfg.split_seed)
    small, large = spec.batch_sizes
    steps = {bs: len(train_rows) // bs * spec.workload.epochs for bs in (small, large)}  # drop_last: full steps
    assert spec.workload.drop_last and steps[small] >= 2000 and steps[large] >= 200, steps
    assert spec.repeats_min < spec.repeats_max and spec.scheduler.name == "none" and spec.range_check.mode == "extend"
    assert spec.sampler.name == "sobol" and spec.assumed_epoch_s and spec.assumed_sd_pp
    assert load_comparison_preset("compare-cifar10-resnet18").batch_sizes == [512, 1024, 2048, 4096, 8192, 16384, 32768]
    assert load_comparison_data("compare-mnist1d-cpu")["name"] == "compare-mnist1d-cpu"


@pytest.mark.parametrize("name", list_comparison_presets())
def test_no_preset_moves_an_arms_lr_centre_by_hand(name):
    assert all(a.lr_center is None for a in load_comparison_preset(name).arms)


def test_unknown_preset_names_the_choices():
    with pytest.raises(KeyError, match="compare-mnist1d-cpu"):
        load_comparison_preset("nope")


def test_same_sampler_seed_stream_across_arms_and_trial_seeds_shared():
    spec = ComparisonSpec.model_validate(_spec(sampler={"name": "random", "seed": 7}, seed=3))
    by_bs: dict[int, set[int]] = {}
    for s in expand(spec):
        by_bs.setdefault(s.batch_size, set()).add(s.spec["sampler"]["seed"])
        assert s.spec["seed"] == 3 and s.spec["vary_seed"] is True
    # seed = base + batch index, identical across arms
    assert by_bs == {128: {7}, 512: {8}, 2048: {9}}


def test_lr_ranges_have_equal_width_and_follow_each_arms_scaling_rule():
    spec = ComparisonSpec.model_validate(_spec(lr_decades=1.5))
    for s in expand(spec):
        lr = s.spec["search_space"]["lr"]
        assert lr["log"] is True
        assert math.log10(lr["high"] / lr["low"]) == pytest.approx(1.5, rel=1e-5)
    ranges = {(s.arm.name, s.batch_size): s.spec["search_space"]["lr"] for s in expand(spec)}
    # lars_warmup: a base LR per 256 examples (the trainer multiplies by bs/256): the same range at every batch size,
    # centred on the paper's warm-up grid 0.1, 0.3, 0.5 (geometric mean 0.246621)
    assert ranges["lars_warmup", 128] == ranges["lars_warmup", 2048]
    assert math.sqrt(ranges["lars_warmup", 512]["low"] * ranges["lars_warmup", 512]["high"]) == pytest.approx(
        (0.1 * 0.3 * 0.5) ** (1 / 3), rel=1e-5
    )
    # tvlars: the paper's absolute LR at 512 is the grid 1, 2, 3 (geometric mean 6^(1/3)); 2048: 10, 12, 15
    c512 = math.sqrt(ranges["tvlars", 512]["low"] * ranges["tvlars", 512]["high"])
    c2048 = math.sqrt(ranges["tvlars", 2048]["low"] * ranges["tvlars", 2048]["high"])
    assert c512 == pytest.approx(6 ** (1 / 3), rel=1e-5)
    assert c2048 == pytest.approx(1800 ** (1 / 3), rel=1e-5)
    # below the ladder's smallest batch size the centre is held constant
    assert ranges["tvlars", 128] == ranges["tvlars", 512]


def test_default_lr_center_interpolates_in_log_log_between_paper_batch_sizes():
    c512, c1024 = default_lr_center("tvlars", 512), default_lr_center("tvlars", 1024)
    mid = default_lr_center("tvlars", 724)  # ~ sqrt(512 * 1024)
    assert c512 < mid < c1024
    assert math.log(mid) == pytest.approx((math.log(c512) + math.log(c1024)) / 2, abs=0.01)
    assert default_lr_center("lars", 4096) == default_lr_center("tvlars", 4096)
    assert lr_range(1.0, 2.0) == (0.1, 10.0)
    with pytest.raises(ValueError, match="lr_center"):
        default_lr_center("sgd", 512)


def test_linear_scaling_on_an_optimizer_without_it_in_the_trainer_scales_the_written_range():
    spec = ComparisonSpec.model_validate(
        _spec(arms=[{"optimizer": "tvlars"}, {"optimizer": "lamb", "lr_scaling": "linear_256", "lr_center": 0.001}])
    )
    lamb = {s.batch_size: s.spec["search_space"]["lr"] for s in expand(spec) if s.arm.optimizer == "lamb"}
    assert lamb[512] == {"type": "float", "low": 0.0002, "high": 0.02, "log": True}  # 0.001 * 512/256 * 10^±1
    assert lamb[2048]["low"] == pytest.approx(0.0008)


def test_lr_center_mapping_and_explicit_space_and_fixed_are_used():
    spec = ComparisonSpec.model_validate(
        _spec(
            arms=[
                {
                    "optimizer": "tvlars",
                    "lr_center": {128: 1.0, 2048: 16.0},
                    "search_space": {"delay_epochs": {"type": "int", "low": 0, "high": 3}},
                    "fixed": {"alpha": 1.0},
                },
                {"optimizer": "lars", "label": "lars-plain"},
            ]
        )
    )
    s = {(x.arm.name, x.batch_size): x.spec for x in expand(spec)}
    lr512 = s["tvlars", 512]["search_space"]["lr"]
    assert math.sqrt(lr512["low"] * lr512["high"]) == pytest.approx(4.0, rel=1e-5)  # halfway in log-log
    assert set(s["tvlars", 512]["search_space"]) == {"lr", "delay_epochs"}
    assert s["tvlars", 512]["fixed"] == {"alpha": 1.0}
    assert s["lars-plain", 128]["name"] == "cmp-lars-plain-bs128-t0"
    assert "warmup_epochs" not in s["lars-plain", 128]["fixed"]


def test_defaults_warmup_is_the_papers_fraction_of_epochs_and_objective_selects_on_validation_where_reported():
    spec = ComparisonSpec.model_validate(_spec())
    warm = [s.spec for s in expand(spec) if s.arm.optimizer == "lars_warmup"]
    assert all(w["fixed"]["warmup_epochs"] == 2.0 for w in warm)  # 20 % of 10 epochs
    assert spec.objective.metric == DEFAULT_METRIC and spec.objective.direction == "maximize"
    assert spec.rerun.top_k == 1 and spec.rerun.seeds == 3
    assert spec.epoch_budget == 4 * 10
    assert rerun_seeds(spec) == [RERUN_SEED_BASE, RERUN_SEED_BASE + 1, RERUN_SEED_BASE + 2]


@pytest.mark.parametrize(
    ("over", "loc", "message"),
    [
        ({"extra": 1}, "extra", "Extra inputs are not permitted"),
        ({"arms": [{"optimizer": "tvlars"}]}, "arms", "at least 2"),
        ({"arms": [{"optimizer": "tvlars"}, {"optimizer": "tvlars"}]}, "arms", "labels must be distinct"),
        ({"arms": [{"optimizer": "adam"}, {"optimizer": "lars"}]}, "arms.0.optimizer", "unknown optimizer 'adam'"),
        (
            {
                "arms": [
                    {"optimizer": "tvlars", "search_space": {"lr": {"type": "float", "low": 1, "high": 2}}},
                    {"optimizer": "lars"},
                ]
            },
            "arms.0.search_space",
            "lr's range is built by the comparison",
        ),
        ({"arms": [{"optimizer": "tvlars", "colour": 1}, {"optimizer": "lars"}]}, "arms.0.colour", "Extra inputs"),
        ({"arms": [{"optimizer": "tvlars", "lr_center": -1}, {"optimizer": "lars"}]}, "arms.0.lr_center", "> 0"),
        ({"batch_sizes": [512, 128]}, "batch_sizes", "small to large"),
        ({"batch_sizes": [128, 128]}, "batch_sizes", "distinct"),
        ({"batch_sizes": []}, "batch_sizes", "at least 1"),
        (
            {"workload": {"dataset": "mnist1d", "model": "mlp", "epochs": 10, "batch_size": 5}},
            "workload.batch_size",
            "set by the comparison's batch_sizes",
        ),
        ({"workload": {"dataset": "nope", "model": "mlp", "epochs": 10}}, "workload.dataset", "unknown dataset"),
        ({"budget": {"n_trials": 0}}, "budget.n_trials", "greater than or equal to 1"),
        ({"budget": {"n_trials": 4, "epochs": 5}}, "", "cannot pay for one full trial"),
        ({"budget": {"n_trials": 4, "bogus": 1}}, "budget.bogus", "Extra inputs"),
        ({"sampler": {"name": "grid"}}, "sampler.name", "Input should be"),
        ({"objective": {"metric": "accuracy"}}, "objective.metric", "unknown metric"),
        ({"rerun": {"top_k": 1, "seeds": 0}}, "rerun.seeds", "greater than or equal to 1"),
        ({"rerun": {"top_k": 5}}, "", "exceeds the trials a study runs (4)"),
        ({"target_val_acc": 1.5}, "target_val_acc", "less than or equal to 1"),
        ({"lr_decades": 0}, "lr_decades", "greater than 0"),
        ({"name": "bad name!"}, "name", "String should match pattern"),
        ({"arms": [{"optimizer": "sgd"}, {"optimizer": "lars"}]}, "", "no reference LR for 'sgd'; give lr_center"),
        (
            {"arms": [{"optimizer": "lamb", "lr_scaling": "linear_256"}, {"optimizer": "lars"}]},
            "",
            "needs an lr_center",
        ),
        (
            {"arms": [{"optimizer": "tvlars", "fixed": {"lamda": 1}}, {"optimizer": "lars"}]},
            "",
            "arms[0] (tvlars) at batch size 128: fixed: Value error, fixed: unknown trial config key 'lamda' "
            "(did you mean 'lam'?)",
        ),
    ],
)
def test_bad_input_names_the_field(over, loc, message):
    errors = _errors(_spec(**over))
    assert any(err_loc == loc and message in msg for err_loc, msg in errors), errors
