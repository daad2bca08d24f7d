"""StudyCounts: a study's trials by state, its erroring trials and its epochs, as typed fields."""

from __future__ import annotations

import dataclasses

import optuna
from optuna.trial import TrialState

from service.optuna_queries import TRIAL_STATES, StudyCounts, study_counts
from service.trial_report import FailKind, TrialAttr


def test_every_optuna_trial_state_has_a_field():
    assert {s.lower() for s in TRIAL_STATES} <= {f.name for f in dataclasses.fields(StudyCounts)}
    assert StudyCounts.of_states({"COMPLETE": 2, "PRUNED": 1}, errors=0) == StudyCounts(complete=2, pruned=1, errors=0)


def test_study_counts_reads_states_and_the_failures_that_count_against_max_failed():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    for state, kind in [
        (TrialState.COMPLETE, None),
        (TrialState.COMPLETE, None),
        (TrialState.PRUNED, None),
        (TrialState.FAIL, FailKind.ERROR),
        (TrialState.FAIL, FailKind.CANCELLED),
        (TrialState.RUNNING, None),
    ]:
        trial = study.ask()
        if kind is not None:
            trial.set_user_attr(TrialAttr.FAIL_KIND, kind)
        if state == TrialState.COMPLETE:
            study.tell(trial, 0.5)
        elif state != TrialState.RUNNING:
            study.tell(trial, state=state)
    study.enqueue_trial({})
    counts = study_counts(study)
    assert counts == StudyCounts(running=1, waiting=1, complete=2, pruned=1, fail=2, errors=1)
    assert counts.finished == 3 and counts.epochs_spent is None
