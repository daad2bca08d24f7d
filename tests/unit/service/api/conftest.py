"""The in-process tier: the real app (``create_app``) on a SQLite file, driven by FastAPI's TestClient.

No uvicorn, PostgreSQL or Ray: what is tested here is the API's own behaviour (routing, validation, status codes,
state rules, SQL reads). What only real processes show (a worker running a study, several API processes, a
PostgreSQL database) is in tests/integration/service.
"""

from __future__ import annotations

from collections.abc import Iterator

import optuna
import pytest
from fastapi.testclient import TestClient

from service._optuna import open_storage
from service.core.config import Settings
from service.core.db import dispose
from service.main import create_app
from service.testing.server import READ_KEY, WRITE_KEY
from service.testing.specs import quick_spec

AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}
READ_AUTH = {"Authorization": f"Bearer {READ_KEY}"}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        api_keys=f"{WRITE_KEY}:write,{READ_KEY}:read",
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    """A client with the write key; its lifespan migrates the database as the server's does."""
    with TestClient(create_app(settings), headers=AUTH) as c:
        yield c
    dispose(settings.database_url)


def submit(client: TestClient, name: str, **overrides) -> dict:
    r = client.post("/v1/studies", json=quick_spec(name, **overrides))
    assert r.status_code == 201, r.text
    return r.json()


def seed_trials(database_url: str, name: str, values: list[float | str | None]) -> optuna.Study:
    """An Optuna study under ``name`` with one COMPLETE trial per value (None: a FAIL trial; ``"pruned:0.95"``: a
    PRUNED one at that value), as a worker leaves it: validation value, test at best validation 0.01 below it."""
    study = optuna.create_study(storage=open_storage(database_url), study_name=name, direction="maximize")
    for i, value in enumerate(values):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(0.3, 60.0, log=True)})
        trial.report(0.1 * i, step=1)
        if value is None:
            trial.set_user_attr("fail_reason", "boom")
            trial.set_user_attr("note", "not a summary attr")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif isinstance(value, str):
            trial.report(float(value.split(":")[1]), step=2)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            trial.set_user_attr("best_val_acc", value)
            trial.set_user_attr("test_acc_at_best_val", round(value - 0.01, 4))
            trial.set_user_attr("best_test_acc", value)
            study.tell(trial, value)
    return study
