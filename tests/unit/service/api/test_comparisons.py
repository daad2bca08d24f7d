"""/v1/comparisons in process: validation (422), auth, idempotency and names (409), 404s, the cancel/resume state
rules, and the worker's step (re-runs queued after tuning, the result after the re-runs) on seeded Optuna studies."""

from __future__ import annotations

import math
import time

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from scipy import stats as scipy_stats

from search_spaces.comparison import (
    MAX_RERUN_SEEDS,
    RERUN_SEED_BASE,
    load_comparison_preset,
    rerun_seed_base,
    rerun_seeds,
)
from service._optuna import open_storage
from service.comparisons.machine import advance_all
from service.comparisons.plan import WARM_STUDY_OVERHEAD_S
from service.comparisons.report import PLOTS
from service.comparisons.stats import bootstrap_mean
from service.core.db import session_scope
from service.models import StudyRecord, StudyState
from service.optuna_queries import epochs_spent
from service.testing.specs import quick_spec
from tests.unit.service.api.conftest import READ_AUTH

SMALL = {
    "preset": "compare-mnist1d-cpu",
    "name": "small",
    "arms": [{"optimizer": "tvlars"}, {"optimizer": "lamb", "lr_center": 0.03}],
    "primary": ["lamb"],  # the preset's primary arm (lars_warmup) is not among these
    "workload": {"epochs": 20},
    "batch_sizes": [256, 4000],
    "budget": {"epochs": 60, "max_concurrent": 1},
    "rerun": {"top_k": 1, "seeds": 3},
    "tuning_repeats": 1,
    "range_check": "flag",
}


def submit(client, body=None, **headers) -> dict:
    r = client.post("/v1/comparisons", json=body or SMALL, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_submit_queues_one_tuning_study_per_arm_and_batch_size_with_equal_budgets(client):
    c = submit(client)
    assert c["state"] == "QUEUED" and c["phase"] == "tune" and c["verdicts"] == {}
    arms = c["arms"]
    assert [(a["label"], a["batch_size"]) for a in arms] == [
        ("tvlars", 256),
        ("tvlars", 4000),
        ("lamb", 256),
        ("lamb", 4000),
    ]
    studies = {s["id"]: s for s in client.get("/v1/studies").json()["items"]}
    assert len(studies) == 4 and all(len(a["studies"]) == 1 and a["studies"][0] in studies for a in arms)
    budgets = {studies[a["studies"][0]]["spec"]["budget"]["epochs"] for a in arms}
    assert budgets == {3 * 20} and {a["epochs_budget"] for a in arms} == budgets
    assert all(a["epochs_spent"] == 0 and a["rerun"] is None for a in arms)
    assert all(s["state"] == "QUEUED" for s in studies.values())
    assert client.get(f"/v1/comparisons/{c['id']}").json()["arms"] == arms
    assert client.get("/v1/comparisons").json()["total"] == 1


BAD = [
    ({"arms": [{"optimizer": "tvlars"}]}, "arms", "at least 2"),
    ({"arms": [{"optimizer": "adam"}, {"optimizer": "lamb"}]}, "arms.0.optimizer", "unknown optimizer 'adam'"),
    ({"batch_sizes": [4000, 256]}, "batch_sizes", "small to large"),
    ({"budget": {"n_trials": 3, "epochs": 5}}, "", "cannot pay for one full trial"),
    ({"preset": "nope"}, "preset", "Unknown comparison preset"),
    ({"workload": {"batch_size": 10}}, "workload.batch_size", "set by the comparison"),
    ({"scheduler": {"name": "asha"}}, "scheduler", "'asha' cannot prune a comparison's trials"),
    ({"scheduler": {"name": "median"}}, "scheduler", "with max_concurrent 1, the first trial has no peer"),
    ({"range_check": "move"}, "range_check", "Input should be 'extend' or 'flag'"),
    ({"tuning_repeats": 0}, "tuning_repeats", "greater than or equal to 1"),
    ({"tuning_repeats": 11}, "tuning_repeats", "less than or equal to 10"),
    ({"tuning_repeats": {"min": 4, "max": 3}}, "tuning_repeats", "min (4) exceeds max (3)"),
    ({"tuning_repeats": {"min": 1, "max": 3}}, "tuning_repeats", "greater than or equal to 2"),
    ({"margin": 0}, "margin", "greater than 0"),
    ({"primary": ["lars"]}, "", "primary: 'lars' is not an arm compared with the first (choose from lamb)"),
    ({"primary": ["tvlars"]}, "", "'tvlars' is not an arm compared with the first"),
    ({"budget": {"extension_epochs": 5}}, "budget", "extension_epochs is no longer used"),
    ({"range_check": {"mode": "extend", "max_extensions": 9}}, "range_check.max_extensions", "less than or equal"),
    ({"dry_run": True, "batch_sizes": [4000, 256]}, "batch_sizes", "small to large"),  # a plan validates too
]


@pytest.mark.parametrize(("override", "loc", "message"), BAD, ids=[m for _, _, m in BAD])
def test_a_bad_comparison_is_422_with_the_fields_location(client, override, loc, message):
    r = client.post("/v1/comparisons", json={**SMALL, **override})
    assert r.status_code == 422, r.text
    where = {".".join(map(str, e["loc"][1:])): e["msg"] for e in r.json()["detail"]}
    assert any(k.startswith(loc) and message in msg for k, msg in where.items()), where
    assert client.get("/v1/comparisons").json()["total"] == 0
    assert client.get("/v1/studies").json()["total"] == 0  # nothing was queued


def test_a_dry_run_answers_the_plan_and_stores_nothing(client):
    body = {**SMALL, "tuning_repeats": 3, "dry_run": True, "assumed_epoch_s": 2.0, "assumed_sd_pp": 1.0}
    r = client.post("/v1/comparisons", json=body, params={"workers": 2}, headers={"Idempotency-Key": "k-plan"})
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["dry_run"] is True and p["workers"] == 2 and "id" not in p
    assert client.get("/v1/comparisons").json()["total"] == 0 and client.get("/v1/studies").json()["total"] == 0
    # by hand: 3 repeats × (3 tuning trials × 20 epochs + 1 re-run × 3 seeds × 20 epochs), no extension (flag)
    assert [(a["arm"], a["batch_size"]) for a in p["arms"]] == [
        ("tvlars", 256), ("tvlars", 4000), ("lamb", 256), ("lamb", 4000)
    ]  # fmt: skip
    for a in p["arms"]:
        assert a["studies"] == [6, 6] and a["trials"] == [18, 18] and a["epochs"] == [360, 360]
        assert a["steps"] is None and a["steps_per_epoch"] is None  # no stored trial of this workload yet
    assert p["totals"]["epochs"] == [4 * 360, 4 * 360]
    # wall: every epoch at assumed_epoch_s plus a warm runner's 1 s per study (scheduler: none), shared by 2 workers
    assert p["wall_time_s"] == pytest.approx([(4 * 360 * 2.0 + 4 * 6 * WARM_STUDY_OVERHEAD_S) / 2] * 2)
    assert {e["source"] for e in p["epoch_seconds"].values()} == {"assumed_epoch_s"}
    # MDD: m = 2 verdicts, a fixed number of repeats (α/m), n = 3, ν = 2, s = 1 pp: (6.2053 + 1.0607) / √3
    t = scipy_stats.t
    mdd = (t.ppf(1 - 0.025 / 2, 2) + t.ppf(0.8, 2)) * 1.0 / math.sqrt(3)
    assert [v["mdd_pp"] for v in p["verdicts"]] == pytest.approx([mdd, mdd]) and mdd == pytest.approx(4.195, abs=0.001)
    assert {(v["alpha"], v["n_max"], v["sd_source"]) for v in p["verdicts"]} == {(0.025, 3, "assumed_sd_pp")}
    # the Idempotency-Key of the dry run had no effect: a real submit with it is new (201), then a replay (200)
    assert submit(client, SMALL, **{"Idempotency-Key": "k-plan"})["state"] == "QUEUED"
    again = client.post("/v1/comparisons", json=SMALL, headers={"Idempotency-Key": "k-plan"})
    assert again.status_code == 200
    # without assumptions or history, the plan says what it cannot estimate
    bare_spec = {**SMALL, "preset": "compare-quick", "name": "bare", "dry_run": True}  # a preset without assumptions
    bare = client.post("/v1/comparisons", json=bare_spec).json()
    assert bare["wall_time_s"] is None and all(v["mdd_pp"] is None for v in bare["verdicts"]) and bare["notes"]


def test_idempotency_and_names(client):
    first = submit(client, SMALL, **{"Idempotency-Key": "k1"})
    again = client.post("/v1/comparisons", json=SMALL, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    other = client.post("/v1/comparisons", json={**SMALL, "seed": 1}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
    taken = client.post("/v1/comparisons", json=SMALL)
    assert taken.status_code == 409 and "exists" in taken.json()["detail"]
    assert client.get("/v1/studies").json()["total"] == 4  # replays made no studies


def test_auth_read_and_write_scopes(client):
    assert client.post("/v1/comparisons", json=SMALL, headers={"Authorization": ""}).status_code == 401
    assert client.post("/v1/comparisons", json=SMALL, headers=READ_AUTH).status_code == 403
    c = submit(client)
    assert client.get(f"/v1/comparisons/{c['id']}", headers=READ_AUTH).status_code == 200
    assert client.post(f"/v1/comparisons/{c['id']}/cancel", headers=READ_AUTH).status_code == 403


@pytest.mark.parametrize("path", ["", "/report", "/result"])
def test_unknown_comparison_is_404(client, path):
    r = client.get(f"/v1/comparisons/nope{path}")
    assert r.status_code == 404 and "Comparison not found" in r.json()["detail"]
    assert client.post("/v1/comparisons/nope/cancel").status_code == 404
    assert client.post("/v1/comparisons/nope/resume").status_code == 404


def test_report_and_result_are_404_until_done(client):
    c = submit(client)
    for path in ("report", "result"):
        r = client.get(f"/v1/comparisons/{c['id']}/{path}")
        assert r.status_code == 404 and "QUEUED" in r.json()["detail"]


def test_cancel_and_resume_state_rules(client):
    c = submit(client)
    assert client.post(f"/v1/comparisons/{c['id']}/resume").status_code == 409  # QUEUED: nothing to resume
    r = client.post(f"/v1/comparisons/{c['id']}/cancel")
    assert r.status_code == 202 and r.json()["state"] == "CANCELLED"
    assert {s["state"] for s in client.get("/v1/studies").json()["items"]} == {"CANCELLED"}
    assert client.post(f"/v1/comparisons/{c['id']}/cancel").status_code == 409
    r = client.post(f"/v1/comparisons/{c['id']}/resume")
    assert r.status_code == 202 and r.json()["state"] == "QUEUED" and r.json()["error"] is None
    assert {s["state"] for s in client.get("/v1/studies").json()["items"]} == {"QUEUED"}


# -- the worker's step, on seeded stored trials ---------------------------------------------------------------------


def _seed_tuning(url: str, study: StudyRecord, values: list[float]) -> None:
    spec = study.spec
    dists = {
        k: FloatDistribution(p["low"], p["high"], log=p.get("log", False)) for k, p in spec["search_space"].items()
    }
    s = optuna.create_study(storage=open_storage(url), study_name=study.name, direction="maximize")
    for v in values:
        t = s.ask(dists)
        for e in range(1, 3):
            t.report(v * e / 2, step=e)
        t.set_user_attr("epochs_run", 2)
        s.tell(t, v)


def _finish(url: str, names: set[str]) -> None:
    """The studies SUCCEEDED, with the epochs their trials spent stored on the record (as the worker keeps it)."""
    with session_scope(url) as s:
        for r in s.query(StudyRecord).filter(StudyRecord.name.in_(names)):
            r.state = StudyState.SUCCEEDED.value
            r.epochs_spent = epochs_spent(optuna.load_study(study_name=r.name, storage=open_storage(url)))


def test_the_worker_step_queues_reruns_on_fresh_seeds_then_stores_the_result(client, settings):
    url = settings.database_url
    c = submit(client, {**SMALL, "tuning_repeats": 2})
    with session_scope(url) as s:
        tune = list(s.query(StudyRecord).filter_by(comparison_id=c["id"]))
        for i, study in enumerate(tune):
            _seed_tuning(url, study, [0.5 + 0.01 * i, 0.6 + 0.01 * i, 0.55])
        names = {t.name for t in tune}
    assert advance_all(url) == 0  # the studies are still QUEUED: nothing to do
    _finish(url, names)
    assert advance_all(url) == 1
    got = client.get(f"/v1/comparisons/{c['id']}").json()
    assert got["phase"] == "rerun" and got["state"] == "RUNNING"
    assert all(len(a["studies"]) == 4 for a in got["arms"])  # two tuning repeats, each with its winner's re-run
    with session_scope(url) as s:
        reruns = list(s.query(StudyRecord).filter_by(comparison_id=c["id"], role="rerun"))
        specs = {r.name: r.spec for r in reruns}
    assert len(specs) == 8
    for name, spec in specs.items():
        repeat = int(name.rsplit("-t", 1)[1].split("-")[0])  # seeds nested in the repeat (R1)
        assert spec["seed"] == rerun_seed_base(repeat) and spec["vary_seed"] and spec["scheduler"]["name"] == "none"
        assert spec["budget"]["n_trials"] == 3 and spec["objective"]["metric"] == "test_acc_at_best_val"
        (lr,) = spec["search_space"]["lr"]["choices"]  # the tuned config: the best trial's (value 0.6 + ...)
        assert all(len(p["choices"]) == 1 for p in spec["search_space"].values())
    assert client.get(f"/v1/comparisons/{c['id']}/report").status_code == 404

    scores = {}
    for k, (name, spec) in enumerate(sorted(specs.items())):
        dists = {key: CategoricalDistribution(p["choices"]) for key, p in spec["search_space"].items()}
        s = optuna.create_study(storage=open_storage(url), study_name=name, direction="maximize")
        # tvlars 4 points above lamb; repeats 0.1 point apart, seeds 0.3: a gap that holds from tuning to tuning
        scores[name] = [0.7 + 0.04 * name.startswith("small-tvlars") + 0.001 * k + 0.003 * j for j in range(3)]
        for v in scores[name]:
            t = s.ask(dists)
            t.set_user_attr("curves", {"epoch": [1, 2], "val_acc": [0.5, v], "step": [4, 8]})
            s.tell(t, v)
    _finish(url, set(specs))
    assert advance_all(url) == 1
    done = client.get(f"/v1/comparisons/{c['id']}").json()
    assert done["state"] == "SUCCEEDED" and done["phase"] == "done", done["error"]
    for arm in done["arms"]:
        names = [n for n in specs if n.startswith(f"small-{arm['label']}-bs{arm['batch_size']}-")]
        table = {int(n.rsplit("-t", 1)[1].split("-")[0]): dict(enumerate(scores[n])) for n in names}
        assert sorted(table) == [0, 1]
        assert arm["rerun"] == bootstrap_mean(table).to_dict()
        assert arm["epochs_spent"] == 2 * 3 * 2  # the records' stored epochs_spent: 2 repeats × 3 trials × 2 epochs
    assert set(done["verdicts"]) == {"256", "4000"}
    for rows in done["verdicts"].values():
        (row,) = rows
        # tvlars's re-runs score 4.4 points above lamb's in both repeats (d_r = 0.044, 0.044): better at the one
        # look, n = 2, at α/m = 0.05/2 (two verdicts: one per batch size)
        assert row["arm"] == "tvlars" and row["against"] == "lamb" and row["verdict"] == "better", row
        d = row["difference"]
        assert (d["n"], d["look"], d["alpha"], row["primary"]) == (2, 2, 0.025, True)
        assert d["repeat_differences"] == pytest.approx([0.044, 0.044]) and d["mean"] == pytest.approx(0.044)
        assert [(lk["n"], lk["verdict"]) for lk in d["looks"]] == [(2, "better")] and d["n_seeds"] == 3
        assert d["mdd"] is not None and d["margin"] == 0.01
        assert d["n_seeds"] == 3  # arms pair on each seed's place j in its repeat (RERUN_SEED_BASE + r·S + j)
    result = client.get(f"/v1/comparisons/{c['id']}/result").json()
    reruns = result["arms"][0]["reruns"]
    spec = load_comparison_preset("compare-mnist1d-cpu", _overrides())
    assert [(r["repeat"], r["seed"]) for r in reruns] == [(k, s) for k in (0, 1) for s in rerun_seeds(spec, k)]
    assert rerun_seeds(spec, 1)[0] == RERUN_SEED_BASE + MAX_RERUN_SEEDS  # no seed shared between repeats
    assert [r["repeat"] for r in result["arms"][0]["repeats"]] == [0, 1]
    assert result["arms"][0]["steps_per_epoch"] == 4
    page = client.get(f"/v1/comparisons/{c['id']}/report")
    assert page.status_code == 200 and page.text.count("data:image/png;base64,") == len(PLOTS)

    # a plan of the same workload now draws on this comparison's spread: per batch size the SD of the repeats'
    # differences (tvlars − lamb, mean over each repeat's seeds), with ν = repeats − 1
    plan = client.post("/v1/comparisons", json={**SMALL, "name": "again", "dry_run": True}).json()
    for v in plan["verdicts"]:
        tv, lamb = (result_arm(result, label, v["batch_size"]) for label in ("tvlars", "lamb"))
        d = [np.mean([tv[r][j] - lamb[r][j] for j in tv[r]]) for r in sorted(tv)]
        assert v["sd_source"] == "stored (1 verdicts)" and v["df"] == 1
        assert v["sd_pp"] == pytest.approx(np.std(d, ddof=1) * 100)


def test_a_batch_size_is_re_run_while_another_still_tunes_and_the_look_waits_for_both(client, settings):
    url = settings.database_url
    c = submit(client, {**SMALL, "name": "pipelined", "tuning_repeats": 2})
    tune = _studies(url, c["id"], "tune")
    fast = {k: s for k, s in tune.items() if k[1] == 4000}
    lone = tune["tvlars", 256, 0]  # one arm × repeat at batch 256 ends too: its batch size waits for the rest
    for study in [*fast.values(), lone]:
        _seed_tuning(url, study, [0.5, 0.6])
    _finish(url, {s.name for s in fast.values()} | {lone.name})
    assert advance_all(url) == 1
    reruns = _studies(url, c["id"], "rerun")
    assert set(reruns) == set(fast)  # every arm × repeat at batch 4000 together, none at 256
    got = client.get(f"/v1/comparisons/{c['id']}").json()
    assert got["phase"] == "tune" and got["state"] == "RUNNING"  # the least advanced batch size's phase
    assert advance_all(url) == 0  # nothing more to do until batch 256's tuning ends
    offset = {(bs, r): 0.05 for bs in (256, 4000) for r in (0, 1)}
    _seed_reruns(url, reruns, offset)
    _finish(url, {s.name for s in reruns.values()})
    assert advance_all(url) == 0  # batch 4000 is re-run, but the look waits for batch 256
    rest = {k: s for k, s in tune.items() if k[1] == 256 and k != ("tvlars", 256, 0)}
    for study in rest.values():
        _seed_tuning(url, study, [0.5, 0.6])
    _finish(url, {s.name for s in rest.values()})
    assert advance_all(url) == 1
    more = {k: s for k, s in _studies(url, c["id"], "rerun").items() if k not in reruns}
    assert set(more) == {k for k in tune if k[1] == 256}
    assert client.get(f"/v1/comparisons/{c['id']}").json()["phase"] == "rerun"
    _seed_reruns(url, more, offset)
    _finish(url, {s.name for s in more.values()})
    assert advance_all(url) == 1
    done = client.get(f"/v1/comparisons/{c['id']}").json()
    assert done["state"] == "SUCCEEDED" and done["phase"] == "done", done["error"]
    assert set(done["verdicts"]) == {"256", "4000"}


def result_arm(result: dict, label: str, bs: int) -> dict[int, dict[int, float]]:
    (arm,) = [a for a in result["arms"] if (a["label"], a["batch_size"]) == (label, bs)]
    table: dict[int, dict[int, float]] = {}
    for r in arm["reruns"]:
        table.setdefault(r["repeat"], {})[r["seed"]] = r["score"]
    return table


def _overrides() -> dict:
    return {k: v for k, v in SMALL.items() if k != "preset"}


# -- the range check, on fixed stored trials --------------------------------------------------------------------------


def _store(url: str, name: str, spec: dict, trials: list[tuple[dict, float]]) -> None:
    """Trials with the given params (the rest at their range's middle) and values, as a finished study stores them."""
    dists = {
        k: FloatDistribution(p["low"], p["high"], log=p.get("log", False)) for k, p in spec["search_space"].items()
    }
    middle = {
        k: math.sqrt(d.low * d.high) if d.log else (d.low + d.high) / 2 for k, d in dists.items()
    }  # fmt: skip
    study = optuna.create_study(storage=open_storage(url), study_name=name, direction="maximize", load_if_exists=True)
    for params, value in trials:
        study.add_trial(
            optuna.trial.create_trial(
                params=middle | params,
                distributions=dists,
                value=value,
                intermediate_values={20: value},
                user_attrs={"epochs_run": 20},
            )
        )


def _at(spec: dict, key: str, position: float) -> float:
    """The value at ``position`` (0..1, log space) of a searched parameter's range."""
    p = spec["search_space"][key]
    return math.exp(math.log(p["low"]) + position * (math.log(p["high"]) - math.log(p["low"])))


def _studies(url: str, comparison_id: str, role: str) -> dict[tuple, StudyRecord]:
    with session_scope(url) as s:
        rows = s.query(StudyRecord).filter_by(comparison_id=comparison_id, role=role).all()
        s.expunge_all()
    return {(r.arm, r.batch_size, r.repeat): r for r in rows}


@pytest.mark.parametrize("mode", ["extend", "flag"])
def test_an_optimum_on_the_edge_extends_every_arm_at_that_batch_size(client, settings, mode):
    url = settings.database_url
    c = submit(client, {**SMALL, "name": f"ranged-{mode}", "tuning_repeats": 2, "range_check": mode})
    tune = _studies(url, c["id"], "tune")
    assert len(tune) == 2 * 2 * 2
    for (arm, bs, repeat), study in tune.items():
        # TVLARS's best LR at batch 256, repeat 1, lies at 95 % of its log range; every other optimum inside
        edge = (arm, bs, repeat) == ("tvlars", 256, 1)
        best = _at(study.spec, "lr", 0.95 if edge else 0.5)
        _store(url, study.name, study.spec, [({"lr": best}, 0.8), ({"lr": _at(study.spec, "lr", 0.3)}, 0.7)])
    _finish(url, {s.name for s in tune.values()})
    assert advance_all(url) == 1
    got = client.get(f"/v1/comparisons/{c['id']}").json()
    extensions = _studies(url, c["id"], "extend")
    tune = _studies(url, c["id"], "tune")
    for key, study in tune.items():
        checked = study.outcome["range_check"]["lr"]
        assert checked["edge"] == ("high" if key == ("tvlars", 256, 1) else None)
        assert checked["position"] == pytest.approx(0.95 if key == ("tvlars", 256, 1) else 0.5, abs=1e-6)
        extended = mode == "extend" and key[1] == 256
        assert (key in extensions) == extended  # every arm x repeat at batch 256, the same extra budget
        assert checked["extended"] == (extended and key == ("tvlars", 256, 1))
        lr = study.spec["search_space"]["lr"]
        wider = 10 if checked["extended"] else 1  # widened one decade up, not moved
        assert (checked["final_low"], checked["final_high"]) == pytest.approx((lr["low"], lr["high"] * wider))
        if extended:
            ext = extensions[key].spec
            assert ext["search_space"]["lr"]["high"] == pytest.approx(lr["high"] * wider)
            assert ext["budget"]["epochs"] == 60 and ext["budget"]["n_trials"] == 3  # what a tuning study spends
    if mode == "flag":
        assert got["phase"] == "rerun" and not extensions
        return
    assert got["phase"] == "extend" and len(extensions) == 4
    # the winner is the best over the tuning study and its extension: TVLARS's repeat 1 finds a better LR higher up
    higher = _at(extensions["tvlars", 256, 1].spec, "lr", 0.8)
    for key, study in extensions.items():
        edge = key == ("tvlars", 256, 1)
        _store(
            url,
            study.name,
            study.spec,
            [({"lr": higher if edge else _at(study.spec, "lr", 0.8)}, 0.9 if edge else 0.5)],
        )
    _finish(url, {s.name for s in extensions.values()})
    assert advance_all(url) == 1
    reruns = _studies(url, c["id"], "rerun")
    assert len(reruns) == 2 * 2 * 2 and {r.rank for r in reruns.values()} == {1}
    for key, study in reruns.items():
        (lr,) = study.spec["search_space"]["lr"]["choices"]
        expected = higher if key == ("tvlars", 256, 1) else _at(tune[key].spec, "lr", 0.5)
        assert lr == pytest.approx(expected)


# -- isolation: one comparison's trouble never holds up another -----------------------------------------------------


def test_a_name_under_a_comparisons_prefix_is_refused_naming_the_comparison(client):
    c = submit(client, {**SMALL, "name": "reserved"})
    rerun_name = "reserved-tvlars-bs256-t0-r1"  # what the comparison will name its re-run study after tuning
    r = client.post("/v1/studies", json=quick_spec(rerun_name))
    assert r.status_code == 409 and "reserved for comparison 'reserved'" in r.json()["detail"], r.text
    assert client.post("/v1/studies", json=quick_spec("reservedx-r1")).status_code == 201  # another prefix: free
    # and a comparison cannot be submitted under a prefix a study already uses
    r = client.post("/v1/comparisons", json={**SMALL, "name": "reservedx"})
    assert r.status_code == 409 and "'reservedx-r1'" in r.json()["detail"], r.text
    r = client.post("/v1/comparisons", json={**SMALL, "name": "reserved-tvlars"})  # inside another's prefix
    assert r.status_code == 409 and "reserved for comparison 'reserved'" in r.json()["detail"], r.text
    assert client.get(f"/v1/comparisons/{c['id']}").json()["state"] == "QUEUED"


def test_a_comparison_that_cannot_advance_never_delays_another_and_fails_after_its_retries(client, settings):
    from search_spaces.spec import StudySpec
    from service.crud import create_study
    from service.models import ComparisonRecord

    url = settings.database_url
    blocked, later = (submit(client, {**SMALL, "name": name}) for name in ("blocked", "later"))
    with session_scope(url) as s:
        tune = list(s.query(StudyRecord).filter(StudyRecord.comparison_id.in_((blocked["id"], later["id"]))))
        for i, study in enumerate(tune):
            _seed_tuning(url, study, [0.5 + 0.01 * i, 0.6 + 0.01 * i])
        names = {t.name for t in tune}
        # a study that holds the first comparison's future re-run name (one made before names were reserved):
        # queueing that re-run raises ConflictError on every pass
        squatter = StudySpec.model_validate(quick_spec("blocked-tvlars-bs256-t0-r1"))
        create_study(session=s, spec=squatter, of_comparison=True)
    _finish(url, names)
    assert advance_all(url, max_failures=2, retry_s=2.0) == 1  # the later, unrelated comparison moved on
    tried = time.monotonic()
    assert advance_all(url, max_failures=2, retry_s=2.0) == 0  # the failed one is within its back-off: not tried
    got = {c["name"]: c for c in client.get("/v1/comparisons").json()["items"]}
    assert got["later"]["phase"] == "rerun" and got["later"]["state"] == "RUNNING"
    assert got["blocked"]["phase"] == "tune" and got["blocked"]["state"] == "QUEUED"  # its step rolled back
    with session_scope(url) as s:
        row = s.get(ComparisonRecord, blocked["id"])
        assert row.advance_failures == 1 and row.retry_at is not None  # counted on its row, with a back-off
    assert time.monotonic() - tried < 2.0, "too slow to see the back-off"
    time.sleep(max(0.0, 2.1 - (time.monotonic() - tried)))
    assert advance_all(url, max_failures=2, retry_s=2.0) == 1  # the second failure ends it
    failed = client.get(f"/v1/comparisons/{blocked['id']}").json()
    assert failed["state"] == "FAILED"
    assert "failed 2 times" in failed["error"] and "ConflictError" in failed["error"]
    assert "blocked-tvlars-bs256-t0-r1" in failed["error"]
    assert client.get(f"/v1/comparisons/{later['id']}").json()["state"] == "RUNNING"


# -- rounds of tuning repeats and the looks (R4), on seeded stored trials ---------------------------------------------


def _seed_reruns(url: str, reruns: dict[tuple, StudyRecord], offset: dict[tuple[int, int], float]) -> None:
    """Each re-run study's trials: 0.7 + 0.003·seed index, plus ``offset[bs, repeat]`` for tvlars."""
    for (arm, bs, repeat), study in reruns.items():
        dists = {key: CategoricalDistribution(p["choices"]) for key, p in study.spec["search_space"].items()}
        s = optuna.create_study(storage=open_storage(url), study_name=study.name, direction="maximize")
        for j in range(study.spec["budget"]["n_trials"]):
            t = s.ask(dists)
            v = 0.7 + 0.003 * j + (offset[bs, repeat] if arm == "tvlars" else 0.0)
            t.set_user_attr("curves", {"epoch": [1, 2], "val_acc": [0.5, v], "step": [4, 8]})
            s.tell(t, v)


def test_rounds_stop_a_batch_size_once_decided_and_record_each_look(client, settings):
    url = settings.database_url
    c = submit(client, {**SMALL, "name": "rounds", "tuning_repeats": {"min": 2, "max": 3}, "rerun": {"seeds": 2}})
    assert c["spec"]["tuning_repeats"] == {"min": 2, "max": 3}
    tune = _studies(url, c["id"], "tune")
    assert sorted({k[2] for k in tune}) == [0, 1] and len(tune) == 8  # the first round: repeats 0 and 1
    for study in tune.values():
        _seed_tuning(url, study, [0.5, 0.6])
    _finish(url, {s.name for s in tune.values()})
    assert advance_all(url) == 1
    reruns = _studies(url, c["id"], "rerun")
    # batch 256: tvlars 5 points up in both repeats (decided at look 2); batch 4000: +1 and −1 point (undecided)
    offset = {(256, 0): 0.05, (256, 1): 0.05, (4000, 0): 0.01, (4000, 1): -0.01, (4000, 2): 0.0}
    _seed_reruns(url, reruns, offset)
    _finish(url, {s.name for s in reruns.values()})
    assert advance_all(url) == 1  # the look: batch 4000 gets a round more, every arm together; batch 256 stops
    got = client.get(f"/v1/comparisons/{c['id']}").json()
    assert got["phase"] == "tune" and got["state"] == "RUNNING"
    new = {k: s for k, s in _studies(url, c["id"], "tune").items() if k not in tune}
    assert set(new) == {("tvlars", 4000, 2), ("lamb", 4000, 2)}
    assert all(s.state == StudyState.QUEUED for s in new.values()) and new["tvlars", 4000, 2].name.endswith("-t2")
    for study in new.values():
        _seed_tuning(url, study, [0.5, 0.6])
    _finish(url, {s.name for s in new.values()})
    assert advance_all(url) == 1
    more = {k: s for k, s in _studies(url, c["id"], "rerun").items() if k not in reruns}
    assert set(more) == {("tvlars", 4000, 2), ("lamb", 4000, 2)}  # only the new round's re-runs
    _seed_reruns(url, more, offset)
    _finish(url, {s.name for s in more.values()})
    assert advance_all(url) == 1
    done = client.get(f"/v1/comparisons/{c['id']}").json()
    assert done["state"] == "SUCCEEDED" and done["phase"] == "done", done["error"]
    (at_256,), (at_4000,) = done["verdicts"]["256"], done["verdicts"]["4000"]
    # α/m = 0.05/2; looks at 2 and 3: 10 % of it at the interim look 2, 90 % at 3
    d = at_256["difference"]
    assert at_256["verdict"] == "better" and (d["look"], d["n"]) == (2, 2)
    assert [(lk["n"], lk["alpha"], lk["verdict"]) for lk in d["looks"]] == [(2, pytest.approx(0.0025), "better")]
    d = at_4000["difference"]
    assert at_4000["verdict"] == "undecided" and d["look"] is None and d["n"] == 3
    assert d["repeat_differences"] == pytest.approx([0.01, -0.01, 0.0])
    assert [(lk["n"], lk["alpha"]) for lk in d["looks"]] == [(2, pytest.approx(0.0025)), (3, pytest.approx(0.0225))]
    # (range_check flag: the fabricated winner's lam_steps sits on its range's edge, which the verdict carries too)
    assert at_4000["notes"][-1] == "not decided at the last look: this is not evidence of no difference"
    assert all("optimum at the edge of the searched range" in n for n in at_4000["notes"][:-1])
    assert d["mdd"] > 0.01  # three repeats cannot find a 1-point difference: the page says so
    assert {a["batch_size"]: len(a["studies"]) for a in done["arms"]} == {256: 4, 4000: 6}
