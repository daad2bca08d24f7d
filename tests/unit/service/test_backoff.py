"""The one back-off schedule the storage and the worker wait through a database outage with."""

from __future__ import annotations

from service._optuna import RETRY_FIRST_S, RETRY_MAX_S, Backoff


def test_delays_double_up_to_the_cap_without_an_end():
    backoff = Backoff(None)
    delays = [backoff.next() for _ in range(6)]
    assert delays == [RETRY_FIRST_S, 1.0, 2.0, 4.0, RETRY_MAX_S, RETRY_MAX_S] and backoff.failures == 6


def test_no_delay_once_the_next_try_would_be_past_the_end():
    backoff = Backoff(1.0)
    assert backoff.next() == RETRY_FIRST_S  # a try at 0.5 s fits in 1 s
    assert backoff.next() is None  # one at 0.5 + 1.0 s would not
    assert backoff.failures == 2
    assert Backoff(0.0).next() is None  # retry_s 0: no retry at all
