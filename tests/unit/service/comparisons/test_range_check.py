"""The range check can fail: an optimum kept on its range's edge is extended twice (range_check.max_extensions),
each extension a tuning study's trials over the range widened one decade that way, with seeds and names of its own,
and then the verdict carries "optimum at the edge of the searched range". Driven through the machine's steps on
real storage (the service's tables and Optuna's, in SQLite), with the trials' outcomes constructed."""

from __future__ import annotations

import math
import re

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from search_spaces.comparison import COMPARISON_NAME_PATTERN, load_comparison_preset
from search_spaces.spec import StudySpec
from service.comparisons.machine import advance
from service.comparisons.records import create_comparison, studies_of
from service.core.db import migrate, session_scope
from service.models import StudyState

optuna.logging.set_verbosity(optuna.logging.WARNING)

OVERRIDES = {"batch_sizes": [64], "tuning_repeats": 2, "range_check": {"mode": "extend", "max_extensions": 2}}


def _fill(storage, record, on_edge: bool) -> None:
    """The study's trials: its n_trials points, the best at lr's top (when ``on_edge``, and better in each wider
    range) or at lr's centre."""
    spec = record.spec
    space = spec["search_space"]
    dists = {k: FloatDistribution(p["low"], p["high"], log=p.get("log", False)) for k, p in space.items()}
    study = optuna.create_study(study_name=record.name, storage=storage, direction="maximize")
    lr = dists["lr"]
    best_lr = lr.high if on_edge else math.sqrt(lr.low * lr.high)
    for n in range(spec["budget"]["n_trials"]):
        params = {k: math.sqrt(d.low * d.high) if d.log else (d.low + d.high) / 2 for k, d in dists.items()}
        params["lr"] = best_lr if n == 0 else lr.low * 1.5
        study.add_trial(
            create_trial(
                params=params,
                distributions=dists,
                value=(0.9 + 0.01 * _extension(record.name)) if n == 0 else 0.5,
                user_attrs={"epochs_run": 6},
            )
        )
    record.state, record.epochs_spent = StudyState.SUCCEEDED.value, spec["budget"]["epochs"]


def _extension(name: str) -> int:
    match = re.search(r"-x(\d+)$", name)
    return int(match.group(1)) if match else 0


def _round(url: str, comparison_id: str, storage, role: str) -> str:
    """Fill every QUEUED study of ``role`` (tvlars repeat 0 on lr's top edge), then step the machine."""
    with session_scope(url) as s:
        for record in studies_of(s, comparison_id):
            if record.role == role and record.state == StudyState.QUEUED:
                _fill(storage, record, on_edge=(record.arm, record.repeat) == ("tvlars", 0))
    with session_scope(url) as s:
        assert advance(session=s, comparison_id=comparison_id, storage_url=url)
        from service.models import ComparisonRecord

        return s.get(ComparisonRecord, comparison_id).phase


def test_an_edge_is_extended_twice_then_reported(sqlite_url) -> None:
    migrate(sqlite_url)
    spec = load_comparison_preset("compare-quick", {**OVERRIDES, "name": "edge"})
    storage = optuna.storages.RDBStorage(sqlite_url)
    with session_scope(sqlite_url) as s:
        record, _ = create_comparison(session=s, spec=spec)
        cid = record.id
    assert _round(sqlite_url, cid, storage, "tune") == "extend"
    assert _round(sqlite_url, cid, storage, "extend") == "extend"
    assert _round(sqlite_url, cid, storage, "extend") == "rerun"  # max_extensions reached: on to the re-runs

    with session_scope(sqlite_url) as s:
        studies = studies_of(s, cid)
        s.expunge_all()
    tuning = [r for r in studies if r.role in ("tune", "extend")]
    # every arm × repeat got both extensions (equal spending), each a tuning study's trials and epochs
    assert sorted(r.name for r in tuning if r.role == "extend") == sorted(
        f"edge-{a}-bs64-t{t}-x{e}" for a in ("tvlars", "lars_warmup") for t in (0, 1) for e in (1, 2)
    )
    assert {r.spec["budget"]["n_trials"] for r in tuning} == {spec.n_trials}
    assert {r.spec["budget"]["epochs"] for r in tuning} == {spec.epoch_budget}
    # names within the study-name pattern, all distinct; trial seeds and sampler seeds never shared between studies
    assert all(re.fullmatch(COMPARISON_NAME_PATTERN.replace("{0,71}", "{0,127}"), r.name) for r in studies)
    assert len({r.name for r in studies}) == len(studies)
    for arm in ("tvlars", "lars_warmup"):  # (the arms share one stream by design: trial n of each is alike)
        mine = [r for r in tuning if r.arm == arm]
        seeds = [r.spec["seed"] + n for r in mine for n in range(r.spec["budget"]["n_trials"])]
        assert len(seeds) == len(set(seeds)) == 6 * spec.n_trials
        assert max(seeds) < min(r.spec["seed"] for r in studies if r.role == "rerun")  # re-runs: seeds of their own
    assert len({(r.arm, r.spec["sampler"]["seed"]) for r in tuning}) == len(tuning)
    # lr's range widened one decade up each time, for the arm on the edge; the other arm's range unchanged
    by_name = {r.name: r for r in studies}
    lr0 = by_name["edge-tvlars-bs64-t0"].spec["search_space"]["lr"]
    lr2 = by_name["edge-tvlars-bs64-t0-x2"].spec["search_space"]["lr"]
    assert (lr2["low"], lr2["high"]) == pytest.approx((lr0["low"], lr0["high"] * 100))
    assert (
        by_name["edge-lars_warmup-bs64-t0-x2"].spec["search_space"]
        == by_name["edge-lars_warmup-bs64-t0"].spec["search_space"]
    )
    # the last word: still on the edge after 2 extensions, recorded on the tuning study
    check = by_name["edge-tvlars-bs64-t0"].outcome["range_check"]["lr"]
    assert check["edge"] == "high" and check["extensions"] == 2 and check["edge_final"] is True
    assert by_name["edge-tvlars-bs64-t1"].outcome["range_check"]["lr"]["edge"] is None
    for r in tuning:
        StudySpec.model_validate(r.spec)  # every extension a valid study spec


def test_a_linear_edge_at_its_hard_bound_is_flagged_not_extended() -> None:
    from search_spaces.comparison import range_check, widened

    space = {"delay_fraction": {"type": "float", "low": 0.0, "high": 0.5, "log": False}}
    (check,) = range_check(space, {"delay_fraction": 0.0}).values()
    assert check["edge"] == "low" and check["extendable"] is False
    (check,) = range_check(space, {"delay_fraction": 0.49}).values()
    assert check["edge"] == "high" and widened("delay_fraction", space["delay_fraction"], "high")["high"] == 1.0
