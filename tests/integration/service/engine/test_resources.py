"""A study asking for more CPU/GPU than any Ray node offers (issue 26): FAILED at claim with that reason, never
RUNNING for ever (Ray only warns and leaves the trial pending); a 422 at submit where the API's process sees Ray."""

from __future__ import annotations

import time

import pytest
from fastapi.exceptions import RequestValidationError
from optuna.trial import TrialState

from search_spaces.spec import StudySpec
from service.api.limits import check_resources
from service.engine import FAILED, SUCCEEDED, load_study, run_study
from service.testing.specs import quick_spec
from tests.conftest import unique_name

pytestmark = pytest.mark.usefixtures("ray_address")


def test_a_study_no_node_can_run_fails_at_claim_and_runs_no_trial(sqlite_url):
    spec = quick_spec(unique_name("huge"), resources={"cpu": 1024, "gpu": 64}, budget={"n_trials": 2})
    start = time.monotonic()
    outcome = run_study(spec, sqlite_url)
    assert outcome.state == FAILED, outcome
    assert "no node of the Ray cluster offers the resources one trial asks for (cpu 1024, gpu 64)" in outcome.reason
    assert "the most any node has: CPU 2, GPU 0" in outcome.reason
    assert time.monotonic() - start < 60
    assert not load_study(sqlite_url, spec["name"]).get_trials(states=(TrialState.RUNNING,))
    # the same driver then runs the next study
    ok = quick_spec(unique_name("next"), budget={"n_trials": 1}, scheduler={"name": "none"}, workload={"epochs": 1})
    assert run_study(ok, sqlite_url).state == SUCCEEDED


def test_where_the_api_process_sees_ray_it_is_a_422_at_submit():
    huge = StudySpec.model_validate(quick_spec("huge", resources={"cpu": 3, "gpu": 0}))
    with pytest.raises(RequestValidationError) as e:
        check_resources(huge)
    assert e.value.errors()[0]["loc"] == ("body", "resources")
    check_resources(StudySpec.model_validate(quick_spec("fits", resources={"cpu": 2, "gpu": 0})))
