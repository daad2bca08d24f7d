"""The API's models of a comparison's numbers are read from the statistics' dataclasses, field for field, and give
the JSON the hand-built dicts gave; a study's progress is read from its StudyCounts."""

from __future__ import annotations

from dataclasses import fields

import pytest

from service.api.models import DifferencePublic, LookPublic, Progress, SummaryPublic, VerdictPublic
from service.comparisons.result import VerdictRecord
from service.comparisons.stats import Difference, Look, Summary, Verdict
from service.optuna_queries import StudyCounts


@pytest.mark.parametrize(
    ("model", "source", "not_public"),
    [
        (SummaryPublic, Summary, ()),
        (LookPublic, Look, ()),
        (DifferencePublic, Difference, ()),
        (VerdictPublic, VerdictRecord, ("batch_size",)),  # the key a verdict is listed under
    ],
)
def test_each_public_model_has_its_dataclass_fields(model, source, not_public):
    assert list(model.model_fields) == [f.name for f in fields(source) if f.name not in not_public]


def _difference() -> Difference:
    looks = [
        Look(2, 0.0025, 0.004, -0.02, 0.028, 0.41, 0.2, Verdict.UNDECIDED),
        Look(3, 0.0225, 0.012, 0.002, 0.022, 0.03, 0.4, Verdict.BETTER),
    ]
    return Difference(
        mean=0.012,
        sd=0.004,
        n=3,
        ci_low=0.002,
        ci_high=0.022,
        p_value=0.03,
        p_equivalence=0.4,
        alpha=0.0225,
        margin=0.01,
        look=3,
        mdd=0.015,
        mdd_sd=0.005,
        mdd_df=4,
        repeat_differences=[0.01, 0.016, 0.01],
        n_seeds=2,
        boot_low=0.009,
        boot_high=0.015,
        looks=looks,
    )


@pytest.mark.parametrize("difference", [_difference(), None])
def test_a_verdict_reads_as_the_dict_the_route_built_by_hand(difference):
    record = VerdictRecord(512, "tvlars", "lars", difference, Verdict.BETTER, None, False, ["secondary: ..."])
    by_hand = {
        "arm": record.arm,
        "against": record.against,
        "difference": record.difference.to_dict() if record.difference else None,
        "verdict": record.verdict,
        "reason": record.reason,
        "primary": record.primary,
        "notes": record.notes,
    }
    read = VerdictPublic.model_validate(record)
    assert read.model_dump(mode="json") == VerdictPublic.model_validate(by_hand).model_dump(mode="json")
    assert read.model_dump_json() == VerdictPublic.model_validate(by_hand).model_dump_json()


def test_a_summary_reads_as_its_dict():
    summary = Summary(4, 0.91, 0.01, 0.9, 0.92, 2, [0.905, 0.915])
    assert SummaryPublic.model_validate(summary).model_dump() == summary.to_dict()


def test_progress_from_counts():
    counts = StudyCounts(running=1, waiting=2, complete=3, pruned=4, fail=5, errors=1)
    assert Progress.of(counts, 10).model_dump() == {
        "n_trials": 10,
        "finished": 7,
        "complete": 3,
        "pruned": 4,
        "failed": 5,
        "running": 1,
        "waiting": 2,
        "fraction": 0.7,
    }
    assert Progress.of(StudyCounts(complete=12), 10).fraction == 1.0 and Progress.of(StudyCounts(), 0).fraction == 0
