"""The study engine: a study spec in, a complete and truthful Optuna study out (Ray Tune runs the trials).

``study.run_study`` drives one run; ``records`` keeps the study in Optuna; ``lease`` keeps two drivers apart;
``factories`` builds samplers, schedulers and distributions; ``searcher`` asks and tells Optuna for Ray Tune;
``ray_setup`` starts Ray and the Tuner; ``trainable`` is one trial.
"""

from .._optuna import open_storage
from ..models import StudyState
from .factories import build_distributions, build_sampler, build_scheduler
from .ray_setup import ensure_ray
from .records import StudyOutcome, load_study, study_counts
from .searcher import FailKind
from .study import run_study

#: How a run ends (the study states the engine can report).
SUCCEEDED, FAILED, CANCELLED = StudyState.SUCCEEDED, StudyState.FAILED, StudyState.CANCELLED

__all__ = [
    "CANCELLED",
    "FAILED",
    "SUCCEEDED",
    "FailKind",
    "StudyOutcome",
    "build_distributions",
    "build_sampler",
    "build_scheduler",
    "ensure_ray",
    "load_study",
    "open_storage",
    "run_study",
    "study_counts",
]
