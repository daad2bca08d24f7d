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
from service.comparisons.stats import Verdict, minimum_detectable_difference, range_position
from service.core.jsondata import jsonable
from service.models import ComparisonPhase, StudyRecord, StudyState
from tests.utils.comparisons import fabricated_result

TUNE, RERUN = ComparisonPhase.TUNE, ComparisonPhase.RERUN
SEEDS = 3
#: Per arm, each repeat's re-run scores are LEVEL + 0.01·repeat + 0.002·seed index.
LEVEL = {"tvlars": 0.60, "lars": 0.70}


@pytest.fixture
def spec():
    return load_comparison_preset(
        "compare-mnist1d-cpu",
        {"name": "stored", "arms": [{"optimizer": "tvlars"}, {"optimizer": "lars"}], "batch_sizes": [64],
         "primary": None, "workload": {"epochs": 20}, "tuning_repeats": 2, "scheduler": {"name": "none"},
         "rerun": {"top_k": 1, "seeds": SEEDS}},
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
    assert verdict.verdict is Verdict.SEARCH_FAILURE and "is worse than tuned lars" in verdict.reason
    # d_r = −0.10 in both repeats: no spread, a zero-width interval below 0 at α/m = 0.05 (one verdict, one look)
    d = verdict.difference
    assert d.mean == pytest.approx(-0.10) and d.ci_high == pytest.approx(-0.10) and d.alpha == 0.05
    assert d.repeat_differences == pytest.approx([-0.10, -0.10]) and d.look == 2 and d.n_seeds == SEEDS
    # tvlars's repeat-1 winner is still on lr's edge of the range last searched: the verdict carries it
    assert "tvlars: optimum at the edge of the searched range: lr (repeat 1, position 1.00)" in verdict.notes
    # re-run seeds nested in the repeat (stored before the train_seed attribute: the re-run study's seed rule)
    seeds = [(k, rerun_seed_base(k) + j) for k in (0, 1) for j in range(SEEDS)]
    assert [(r.repeat, r.seed) for r in tv.reruns] == seeds


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


def test_a_missing_arm_and_too_few_repeats_are_inconclusive_with_why():
    result = fabricated_result(batch_sizes=(64, 512), n_trials=3)
    result.arms = [a for a in result.arms if not (a.label == "lamb" and a.batch_size == 512)]
    assert _only(result, "lamb", 512).reason == "lamb has no result at batch size 512"
    few = fabricated_result(batch_sizes=(64,), n_trials=3, repeats=1)
    v = _only(few, "lamb", 64)
    assert v.verdict is Verdict.INCONCLUSIVE and v.reason.startswith("1 tuning repeat(s) with re-runs")


def test_search_check_that_cannot_run_keeps_worse_from_standing():
    result = fabricated_result(batch_sizes=(64,), n_trials=3, levels={"lamb": 0.80})
    lars = result.arm("lars", 64)
    lars.reruns = [r for r in lars.reruns if r.repeat == 0]  # one repeat: the check against lars cannot run
    assert _only(result, "lars", 64).verdict is Verdict.INCONCLUSIVE
    lamb = _only(result, "lamb", 64)  # lamb is 10 points above tvlars, but "worse" needs the search check
    assert lamb.verdict is Verdict.INCONCLUSIVE and lamb.reason.startswith("the search check against lars could not")
    assert _only(result, "lars_warmup", 64).verdict.is_conclusive  # not a "worse": left as it is


def _pair(d: list[float], *, repeats: int | None = None, repeats_min: int | None = None, margin: float = 1.0,
          bs: int = 64) -> list[ArmResult]:  # fmt: skip
    """Two arms whose repeat r scores differ by d[r] on each of 2 seeds nested in the repeat (seed 10·r + j)."""
    arms = []
    for label, shift in (("a", d), ("b", [0.0] * len(d))):
        reruns = [RerunRecord(10 * r + j, 0.5 + 0.1 * j + x, [], 1, r) for r, x in enumerate(shift) for j in range(2)]
        arms.append(ArmResult(label, "sgd", bs, [], {}, {}, 10, 1, reruns=reruns))
    return arms


def _result(arms: list[ArmResult], n_max: int, n_min: int | None = None, **kw) -> ComparisonResult:
    return ComparisonResult("r", {}, "val_acc", arms, tuning_repeats=n_max, repeats_min=n_min, **kw)


D = [0.01, 0.03, 0.02, 0.04]  # d̄ 0.025, SD 0.012910: the t interval at 0.05 is [0.00446, 0.04554] (t(0.975, 3))


def test_a_paired_t_over_repeats_decides_better_and_says_within_the_margin():
    (v,) = _result(_pair(D), 4).verdicts()
    assert v.verdict is Verdict.BETTER and v.primary and v.notes == []
    d = v.difference
    assert (d.n, d.look, d.alpha) == (4, 4, 0.05)
    assert d.ci_low == pytest.approx(0.004457, abs=1e-5) and d.p_value == pytest.approx(0.030466, rel=1e-4)
    # MDD: (t(0.975, 3) + t(0.8, 3)) · 0.012910 / 2 with the one verdict's own SD (3 df)
    assert d.mdd == pytest.approx(minimum_detectable_difference(math.sqrt(0.0005 / 3), 4, 0.05)) and d.mdd_df == 3
    (wide,) = _result(_pair(D), 4, margin=5.0).verdicts()  # interval inside ±5 pp too: better wins, and says so
    assert wide.verdict is Verdict.BETTER and wide.notes[0].startswith("within the margin")


def test_equivalent_undecided_and_worse():
    (v,) = _result(_pair([0.001, -0.001, 0.002, 0.0]), 4).verdicts()
    assert v.verdict is Verdict.EQUIVALENT  # interval within ±1 pp
    (v,) = _result(_pair([0.03, -0.03, 0.02, -0.01]), 4).verdicts()
    assert v.verdict is Verdict.UNDECIDED and v.difference.look is None
    assert v.notes == ["not decided at the last look: this is not evidence of no difference"]
    (v,) = _result(_pair([-x for x in D]), 4).verdicts()
    assert v.verdict is Verdict.WORSE  # no containment between the arms: worse stands


def test_looks_spend_alpha_and_freeze_the_first_decision():
    # looks at 2, 3, 4 (one verdict: α/m = 0.05): 0.0025 at each interim look, 0.045 at 4
    # decided better at look 2 (t(0.99875, 1) = 254.6; 254.6 · 0.0000707 / √2 = 0.0127 < 0.05); the wild 4th repeat
    # cannot unfreeze it
    big = [0.05, 0.0501, 0.049, -0.2]
    (v,) = _result(_pair(big), 4, 2).verdicts()
    assert v.verdict is Verdict.BETTER and v.difference.look == 2
    assert [(lk.n, lk.alpha) for lk in v.difference.looks] == [(2, pytest.approx(0.0025))]
    (v,) = _result(_pair(D), 4, 2).verdicts()
    assert [lk.n for lk in v.difference.looks] == [2, 3, 4]
    assert [lk.alpha for lk in v.difference.looks] == pytest.approx([0.0025, 0.0025, 0.045])
    assert [lk.verdict for lk in v.difference.looks][:2] == [Verdict.UNDECIDED, Verdict.UNDECIDED]
    # three of four repeats so far: undecided, and another round could decide
    partial = _result(_pair(D[:3] + [0.0])[:2], 4, 2)
    for arm in partial.arms:
        arm.reruns = [r for r in arm.reruns if r.repeat < 3]
    (v,) = partial.verdicts()
    assert v.verdict is Verdict.UNDECIDED and v.notes == ["after 3 of up to 4 repeats: more rounds may decide"]
    assert partial.still_open(64) and not _result(_pair(big), 4, 2).still_open(64)


def test_bonferroni_over_primary_verdicts_and_secondary_ones_at_alpha():
    result = fabricated_result(batch_sizes=(32, 256, 1024, 4000))
    verdicts = result.verdicts()
    assert result.m == 12 and all(v.primary for v in verdicts)
    assert [v.difference.alpha for v in verdicts] == pytest.approx([0.05 / 12] * 12)
    result.primary = ["lars"]
    verdicts = result.verdicts()
    assert result.m == 4
    for v in verdicts:
        assert v.primary is (v.against == "lars")
        assert v.difference.alpha == pytest.approx(0.05 / 4 if v.primary else 0.05)
        assert any(n.startswith("secondary") for n in v.notes) is (not v.primary)
    # R6: the MDD of every verdict at one batch size uses one SD pooled over them
    at_32 = [v.difference for v in verdicts if v.batch_size == 32]
    assert len({d.mdd_sd for d in at_32}) == 1 and at_32[0].mdd_df == sum(d.n - 1 for d in at_32)


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
