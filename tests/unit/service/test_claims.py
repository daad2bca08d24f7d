"""How workers find their next study: a comparison's studies largest first, other studies oldest first (on PostgreSQL
an idle worker is woken by NOTIFY: tests/integration/service/test_claims.py)."""

from __future__ import annotations

from search_spaces.spec import StudySpec
from service.core.db import migrate, session_scope
from service.crud import claim_next_study, create_study
from service.testing.specs import quick_spec
from tests.conftest import unique_name


def _queue(url: str, epochs: int, comparison: str | None = None, batch_size: int | None = None) -> str:
    spec = quick_spec(unique_name("claim"), budget={"n_trials": 2, "epochs": epochs})
    if batch_size is not None:
        spec["workload"]["batch_size"] = batch_size
    spec = StudySpec.model_validate(spec)
    with session_scope(url) as s:
        record, _ = create_study(session=s, spec=spec)
        record.comparison_id = comparison
        return record.id


def _claim(url: str) -> str | None:
    with session_scope(url) as s:
        record = claim_next_study(session=s, worker_id="w1", stale_after_s=60)
        return None if record is None else record.id


def test_a_comparisons_largest_study_is_claimed_first_and_other_studies_oldest_first(sqlite_url):
    migrate(sqlite_url)
    plain_old = _queue(sqlite_url, 6)
    small, large, middle = (_queue(sqlite_url, e, comparison="c1") for e in (6, 18, 12))
    plain_new = _queue(sqlite_url, 30)
    assert [_claim(sqlite_url) for _ in range(6)] == [plain_old, large, middle, small, plain_new, None]


def test_among_equal_budgets_the_smaller_batch_size_goes_first(sqlite_url):
    # more optimizer steps per epoch: never faster per epoch, so it goes first and the comparison's tail is short
    migrate(sqlite_url)
    wide, narrow, middle = (_queue(sqlite_url, 18, comparison="c2", batch_size=b) for b in (1024, 64, 256))
    assert [_claim(sqlite_url) for _ in range(4)] == [narrow, middle, wide, None]
