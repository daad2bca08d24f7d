"""Harness for the tests and benchmarks of a source checkout (as ``optuna.testing`` is Optuna's).

``server``: ``tvlars-tune serve`` and workers as real subprocesses; ``pg``: a private PostgreSQL server that a fault
may stop; ``specs``: small study specs that finish in seconds on a CPU. Nothing in the service imports this package.
"""
