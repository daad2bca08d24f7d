"""Benchmark helpers: a throw-away PostgreSQL database and a study seeded with many trials in bulk."""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import optuna
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from search_spaces import load_spec
from service._optuna import open_storage
from service.core.db import dispose, migrate, session_scope
from service.crud import spec_hash
from service.models import StudyRecord

DEFAULT_PG = "postgresql+psycopg://root@127.0.0.1:5432/test"


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new database on the PostgreSQL server of ``TVLARS_BENCH_DATABASE_URL`` (dropped afterwards)."""
    base = make_url(os.environ.get("TVLARS_BENCH_DATABASE_URL", DEFAULT_PG))
    name = f"tvlars_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose(url)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def seed_study(url: str, n_trials: int, epochs: int = 10, seed: int = 0) -> str:
    """A SUCCEEDED study of ``n_trials`` finished trials (params, values, per-epoch values, attrs). Returns its id.

    Rows go straight into Optuna's tables in bulk: going through ``study.tell`` would take minutes for 10 000.
    """
    migrate(url)
    storage = open_storage(url)
    spec = load_spec("mnist1d-quick", {"name": f"seeded-{uuid.uuid4().hex[:6]}", "budget": {"n_trials": n_trials}})
    study = optuna.create_study(storage=storage, study_name=spec.name, direction="maximize")
    rng = random.Random(seed)
    dist = {"name": "FloatDistribution", "attributes": {"step": None, "log": True}}
    lr_dist = json.dumps({**dist, "attributes": {**dist["attributes"], "low": 1.0, "high": 30.0}})
    lam_dist = json.dumps({**dist, "attributes": {**dist["attributes"], "low": 1e-5, "high": 1e-2}})
    start = datetime(2026, 1, 1)
    engine = storage.engine
    with engine.begin() as conn:
        first_id = (conn.exec_driver_sql("SELECT COALESCE(MAX(trial_id), 0) FROM trials").scalar() or 0) + 1
        trials, values, params, steps, attrs = [], [], [], [], []
        for n in range(n_trials):
            tid = first_id + n
            pruned = rng.random() < 0.6
            reached = rng.randint(1, epochs - 1) if pruned else epochs
            curve = [min(0.95, 0.1 + 0.5 * rng.random() * (e / epochs) ** 0.5) for e in range(1, reached + 1)]
            trials.append(
                {
                    "trial_id": tid,
                    "number": n,
                    "study_id": study._study_id,
                    "state": "PRUNED" if pruned else "COMPLETE",
                    "datetime_start": start + timedelta(seconds=n),
                    "datetime_complete": start + timedelta(seconds=n + 1),
                }
            )
            values.append({"trial_id": tid, "objective": 0, "value": curve[-1], "value_type": "FINITE"})
            for name, value, d in (("lr", rng.uniform(1, 30), lr_dist), ("lam", 10 ** rng.uniform(-5, -2), lam_dist)):
                params.append({"trial_id": tid, "param_name": name, "param_value": value, "distribution_json": d})
            steps += [
                {"trial_id": tid, "step": e, "intermediate_value": v, "intermediate_value_type": "FINITE"}
                for e, v in enumerate(curve, 1)
            ]
            attrs += [
                {"trial_id": tid, "key": "epochs_run", "value_json": json.dumps(reached)},
                {"trial_id": tid, "key": "best_test_acc", "value_json": json.dumps(max(curve))},
                {"trial_id": tid, "key": "device", "value_json": json.dumps("cpu:1 threads")},
            ]
        meta = sa.MetaData()
        for table, rows in (
            ("trials", trials),
            ("trial_values", values),
            ("trial_params", params),
            ("trial_intermediate_values", steps),
            ("trial_user_attributes", attrs),
        ):
            conn.execute(sa.Table(table, meta, autoload_with=conn).insert(), rows)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")  # what autovacuum does soon after a bulk load
    record_id = uuid.uuid4().hex
    with session_scope(url) as s:
        canonical = spec.canonical()
        s.add(
            StudyRecord(
                id=record_id,
                name=spec.name,
                spec=canonical,
                spec_hash=spec_hash(canonical),
                state="SUCCEEDED",
                resume=False,
                cancel_requested=False,
                claims=1,
            )
        )
    return record_id
