"""build_result on fixed trials in a real Optuna storage (a SQLite file), and the rules behind a verdict.

The stored numbers are chosen so each assertion can be checked by hand: the stored ``epochs_spent`` differs from the
trials' own epochs (the result must read the column, not recount), a pruned trial has the highest intermediate value
(it must not win), one repeat's range was extended by the range check, and TVLARS's re-runs sit clearly below LARS's
(the search check must say so).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from search_spaces.comparison import expand, load_comparison_preset, rerun_seed_base
from service.comparisons.assembly import build_result
from service.comparisons.result import (
    ArmResult,
    ComparisonResult,
    RerunRecord,
    TrialRecord,
    VerdictRecord,
    contains,
    result_from_json,
)
from service.comparisons.stats import Verdict, range_position
from service.core.jsondata import jsonable
from service.models import ComparisonPhase, StudyRecord, StudyState

from ..utils.comparisons import fabricated_result

TUNE, RERUN = ComparisonPhase.TUNE, ComparisonPhase.RERUN
SEEDS = 3
#: Per arm, each repeat's re-run scores are LEVEL + 0.01·repeat + 0.002·seed index.
LEVEL = {"tvlars": 0.60, "lars": 0.70}


@pytest.fixture
def spec():
    return load_comparison_preset(
        "compare-mnist1d-cpu",
        {"name": "stored", "arms": [{"optimizer": "tvlars"}, {"optimizer": "lars"}], "batch_sizes": [64],
         "tuning_repeats": 2, "scheduler": {"name": "none"}, "rerun": {"top_k": 1, "seeds": SEEDS}},
    )  # fmt: skip


def _record(name: str, spec: dict, arm: str, role: str, repeat: int, **fields) -> StudyRecord:
    return StudyRecord(
        id=uuid.uuid4().hex, name=name, spec=spec, spec_hash="-", state=StudyState.SUCCEEDED.value, comparison_id="c",
        arm=arm, batch_size=64, role=role, repeat=repeat, **fields,
    )  # fmt: skip


def _tuning_trials(space: dict) -> list[optuna.trial.FrozenTrial]:
    """Three trials: a complete one at 0.70 (the winner), a pruned one whose last value 0.90 beats it, a worse one."""
    dists = {k: FloatDistribution(p["low"], p["high"], log=p.get("log", False)) for k, p in space.items()}
    mid = {k: math.sqrt(d.low * d.high) if d.log else (d.low + d.high) / 2 for k, d in dists.items()}
    low = {k: d.low for k, d in dists.items()}
    out = []
    for params, value, state, epochs in (
        (mid, 0.70, "COMPLETE", 24),
        (low, 0.90, "PRUNED", 4),
        (low, 0.5, "COMPLETE", 24),
    ):
        out.append(
            create_trial(
                params=params, distributions=dists, value=value if state == "COMPLETE" else None,
                state=TrialState[state], intermediate_values={epochs: value}, user_attrs={"epochs_run": epochs},
            )
        )  # fmt: skip
    return out


@pytest.fixture
def stored(spec, sqlite_url):
    """Tuning studies (2 repeats × 2 arms), their winners' re-runs, and the records the worker keeps."""
    storage = optuna.storages.RDBStorage(sqlite_url)
    records = []
    for arm_study in expand(spec):
        arm, repeat, data = arm_study.arm.name, arm_study.repeat, arm_study.spec
        study = optuna.create_study(study_name=data["name"], storage=storage, direction="maximize")
        for t in _tuning_trials(data["search_space"]):
            study.add_trial(t)
        outcome = None
        if arm == "tvlars" and repeat == 1:  # the range check moved lr's range one decade down in this repeat
            lr = data["search_space"]["lr"]
            final = {"final_low": lr["low"] / 10, "final_high": lr["high"] / 10, "extended": True}
            outcome = {"range_check": {"lr": {"low": lr["low"], "high": lr["high"], **final}}}
        # stored spending: 52 epochs, not the trials' 24 + 4 + 24 (the column is what the budget counted)
        records.append(_record(data["name"], data, arm, TUNE, repeat, epochs_spent=52, outcome=outcome))
        winner = study.best_trial.params
        rerun = optuna.create_study(study_name=f"{data['name']}-r1", storage=storage, direction="maximize")
        for j in range(SEEDS):
            curve = {"epoch": [1, 2], "val_acc": [0.3, 0.6], "step": [16, 32]}
            rerun.add_trial(
                create_trial(
                    params=winner, distributions={k: CategoricalDistribution([v]) for k, v in winner.items()},
                    value=LEVEL[arm] + 0.01 * repeat + 0.002 * j, user_attrs={"curves": curve},
                )
            )  # fmt: skip
        records.append(_record(f"{data['name']}-r1", data, arm, RERUN, repeat, rank=1, epochs_spent=72))
    return records


def test_build_result_reads_what_is_stored(spec, stored, sqlite_url):
    result = build_result(sqlite_url, spec, stored)
    assert (result.tuning_repeats, result.range_check) == (2, spec.range_check.mode)
    tv, lars = result.arm("tvlars", 64), result.arm("lars", 64)
    for arm in (tv, lars):
        assert arm.epochs_spent == 2 * 52 and [r.epochs_spent for r in arm.repeats] == [52, 52]
        assert [(t.repeat, t.state) for t in arm.trials] == [
            (r, s) for r in (0, 1) for s in ("COMPLETE", "PRUNED", "COMPLETE")
        ]
        assert all(r.best_value == 0.70 for r in arm.repeats)  # the pruned trial's 0.90 is an early epoch's, not a win
        assert arm.scores == {
            r: {j: pytest.approx(LEVEL[arm.label] + 0.01 * r + 0.002 * j) for j in range(SEEDS)} for r in (0, 1)
        }
        assert arm.steps_per_epoch == 16 and not arm.problems
        # budget curves and LR sensitivity draw on finished draws only: the pruned trials are not among them
        assert [(t.repeat, t.number, t.value) for t in arm.tuning_draws] == [
            (r, n, v) for r in (0, 1) for n, v in ((0, 0.7), (2, 0.5))
        ]
    # ranges: the winner is lr's geometric centre, so position 0.5 in the searched range; in the extended repeat the
    # range moved a decade down, so the same value sits at log(10·c/c) / log(100) = 0.5 + 0.5 = 1.0: at the edge
    r0, r1 = tv.repeats
    assert r0.ranges["lr"].position == pytest.approx(0.5) and not r0.ranges["lr"].extended and not r0.ranges["lr"].edge
    assert r1.ranges["lr"].extended and r1.ranges["lr"].position == pytest.approx(1.0) and r1.ranges["lr"].edge
    lr = r1.ranges["lr"]
    assert lr.position == pytest.approx(range_position(lr.value, lr.low, lr.high, True))
    assert set(tv.repeats[0].ranges) == set(spec_space(stored, "tvlars"))  # every searched numeric parameter
    # the search check: TVLARS's space contains LARS, and tuned TVLARS is 10 points below it
    assert contains(tv, lars)
    (verdict,) = result.verdicts()
    assert verdict.verdict is Verdict.SEARCH_FAILURE and "clearly below tuned lars" in verdict.reason
    # tvlars's repeat-1 winner is still on lr's edge of the range last searched: the verdict carries it
    assert verdict.notes == ("tvlars: optimum at the edge of the searched range: lr (repeat 1, position 1.00)",)
    # re-run seeds nested in the repeat (stored before the train_seed attribute: the re-run study's seed rule)
    seeds = [(k, rerun_seed_base(k) + j) for k in (0, 1) for j in range(SEEDS)]
    assert [(r.repeat, r.seed) for r in tv.reruns] == seeds
    assert verdict.difference.mean == pytest.approx(-0.10) and verdict.difference.p_adjusted < 0.05


def test_the_stored_json_round_trips(spec, stored, sqlite_url):
    result = build_result(sqlite_url, spec, stored)
    data = jsonable(asdict(result))
    assert data["arms"][0]["repeats"][1]["ranges"]["lr"]["extended"] is True
    assert "position" in data["arms"][0]["repeats"][0]["ranges"]["lr"]
    again = result_from_json(data)
    assert again.verdicts() == result.verdicts() and again.spending() == result.spending()


def test_a_failed_study_makes_its_verdicts_inconclusive(spec, stored, sqlite_url):
    (broken,) = [s for s in stored if s.arm == "lars" and s.role == RERUN and s.repeat == 1]
    broken.state = StudyState.FAILED.value
    (verdict,) = build_result(sqlite_url, spec, stored).verdicts()
    assert verdict.verdict is Verdict.INCONCLUSIVE and f"study {broken.name} FAILED" in verdict.reason


def test_a_study_missing_from_storage_is_a_problem_not_a_crash(spec, stored, sqlite_url):
    stored = [s for s in stored if not (s.arm == "tvlars" and s.role == TUNE and s.repeat == 0)]
    result = build_result(sqlite_url, spec, stored)
    assert result.arm("tvlars", 64).problems == ["no tuning study for repeat 0"]
    assert result.verdicts()[0].verdict is Verdict.INCONCLUSIVE


def spec_space(records: list[StudyRecord], arm: str) -> dict:
    return next(r.spec["search_space"] for r in records if r.arm == arm and r.role == TUNE)


# --- the rules on fabricated results ---------------------------------------------------------------------------------


def _only(result: ComparisonResult, against: str, bs: int) -> VerdictRecord:
    (v,) = [v for v in result.verdicts() if v.against == against and v.batch_size == bs]
    return v


def test_a_missing_arm_and_too_few_seeds_are_inconclusive_with_why():
    result = fabricated_result(batch_sizes=(64, 512), n_trials=3)
    result.arms = [a for a in result.arms if not (a.label == "lamb" and a.batch_size == 512)]
    assert _only(result, "lamb", 512).reason == "lamb has no result at batch size 512"
    few = fabricated_result(batch_sizes=(64,), n_trials=3, seeds=1)
    v = _only(few, "lamb", 64)
    assert v.verdict is Verdict.INCONCLUSIVE and v.reason.startswith("1 re-run seed(s) shared")


def test_search_check_that_cannot_run_keeps_worse_from_standing():
    result = fabricated_result(batch_sizes=(64,), n_trials=3)
    lars = result.arm("lars", 64)
    lars.reruns = [r for r in lars.reruns if r.repeat == 0]  # one repeat: the check against lars cannot run
    assert _only(result, "lars", 64).verdict is Verdict.INCONCLUSIVE
    lamb = _only(result, "lamb", 64)  # lamb is clearly above tvlars, but "worse" needs the search check
    assert lamb.verdict is Verdict.INCONCLUSIVE and lamb.reason.startswith("the search check against lars could not")
    assert _only(result, "lars_warmup", 64).verdict.is_conclusive  # not a "worse": left as it is


def test_holm_is_applied_over_every_verdict_of_the_comparison():
    result = fabricated_result(batch_sizes=(32, 256, 1024, 4000))
    verdicts = result.verdicts()
    ps = sorted((v.difference.p_value, v.difference.p_adjusted) for v in verdicts)
    m = len(verdicts)
    assert ps[0][1] == pytest.approx(min(1.0, m * ps[0][0]))  # the smallest p-value is multiplied by all 12
    assert all(adj >= p for p, adj in ps)
    # one verdict between tvlars and lars_warmup has p < 0.05 yet is no clear difference after Holm
    assert any(v.difference.p_value < 0.05 <= v.difference.p_adjusted for v in verdicts)


def test_contains_only_the_plain_special_case():
    tv = ArmResult("tvlars", "tvlars", 64, [], {}, {"momentum": 0.9, "alpha": 0.1}, 10, 1)
    assert contains(tv, ArmResult("lars", "lars", 64, [], {}, {"momentum": 0.9}, 10, 1))
    assert not contains(tv, ArmResult("l", "lars", 64, [], {}, {"momentum": 0.8}, 10, 1))  # another momentum
    assert not contains(tv, ArmResult("c", "lars", 64, [], {}, {"lr_schedule": "warmup_cosine"}, 10, 1))
    assert not contains(tv, ArmResult("w", "lars_warmup", 64, [], {}, {}, 10, 1))
    assert not contains(ArmResult("l", "lars", 64, [], {}, {}, 10, 1), tv)


def test_rerun_records_default_to_repeat_zero_for_results_stored_before_repeats():
    old = {"name": "old", "workload": {}, "objective": "val_acc", "arms": [
        {"label": "a", "optimizer": "tvlars", "batch_size": 64, "studies": [1], "best_params": {}, "fixed": {},
         "epochs": 2, "steps_per_epoch": 1, "trials": [{"number": 0, "state": "COMPLETE", "params": {}, "value": 0.5,
         "epochs": 2}], "reruns": [{"seed": 5, "score": 0.5}], "importances": {}}]}  # fmt: skip
    result = result_from_json(old)
    arm = result.arm("a", 64)
    assert arm.reruns == [RerunRecord(5, 0.5)] and arm.scores == {0: {5: 0.5}} and arm.epochs_spent == 2
    assert [(c.repeat, c.spent) for c in result.spending()] == [(None, {"a": 2})]


def test_budget_curves_and_lr_sensitivity_draw_on_completed_trials_only():
    trials = [
        TrialRecord(0, "COMPLETE", {"lr": 1.0}, 0.6, 20),
        TrialRecord(1, "PRUNED", {"lr": 2.0}, 0.9, 4),  # an early epoch's accuracy, not a finished draw
        TrialRecord(2, "FAIL", {"lr": 9.0}, None, 3),
        TrialRecord(0, "COMPLETE", {"lr": 0.5}, 0.7, 20, repeat=1),
    ]
    arm = ArmResult("tvlars", "tvlars", 64, [], {}, {}, epochs=20, steps_per_epoch=16, trials=trials)
    assert [(t.repeat, t.number) for t in arm.tuning_draws] == [(0, 0), (1, 0)]


@pytest.mark.parametrize(
    ("role", "sampler", "number", "enqueued", "kind"),
    [
        ("tune", {"name": "sobol"}, 0, True, "reference"),
        ("tune", {"name": "sobol"}, 2, False, "quasi-random"),
        ("tune", {"name": "tpe", "options": {"n_startup_trials": 3}}, 2, False, "random"),
        ("tune", {"name": "tpe", "options": {"n_startup_trials": 3}}, 3, False, "tpe"),
        ("tune", {"name": "tpe"}, 9, False, "random"),  # Optuna's default: 10 start-up trials
        ("extend", {"name": "sobol"}, 0, False, "extension"),
    ],
)
def test_each_trial_says_how_its_config_was_chosen(role, sampler, number, enqueued, kind):
    from service.comparisons.assembly import trial_kind
    from service.trial_report import TrialAttr

    dist = {"lr": FloatDistribution(0.1, 1.0, log=True)}
    attrs = {TrialAttr.ENQUEUED.value: True} if enqueued else {}
    t = create_trial(params={"lr": 0.3}, distributions=dist, value=0.5, user_attrs=attrs)
    t.number = number
    study = StudyRecord(name="s", spec={"sampler": sampler}, role=role)
    assert trial_kind(t, study) == kind
