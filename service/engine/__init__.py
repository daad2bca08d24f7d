"""The study engine: a study spec in, a complete and truthful Optuna study out (Ray Tune runs the trials)."""

from ..storage import open_storage
from .searcher import FailKind
from .study import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    StudyOutcome,
    build_distributions,
    build_sampler,
    ensure_ray,
    load_study,
    run_study,
    study_counts,
)

__all__ = [
    "CANCELLED",
    "FAILED",
    "SUCCEEDED",
    "FailKind",
    "StudyOutcome",
    "build_distributions",
    "build_sampler",
    "ensure_ray",
    "load_study",
    "open_storage",
    "run_study",
    "study_counts",
]
