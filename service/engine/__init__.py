"""The study engine: a study spec in, a complete and truthful Optuna study out (the trials run on Ray: on the
worker's warm trial runners when the study has no scheduler, else in a Ray Tune run; see ``docs/engine.md``).

``study.run_study`` drives one run; ``records`` keeps the study in Optuna; ``lease`` keeps two drivers apart;
``factories`` builds samplers, schedulers and distributions; ``searcher`` asks and tells Optuna for Ray Tune;
``runners`` keeps trial actors warm across studies; ``ray_setup`` starts Ray and the Tuner; ``trainable`` is one
trial.

Checkpoints: a trial saves its whole trainer state every ``checkpoint_every`` epochs through Ray Tune
(``trainable``); Ray retries, HyperBand pauses and PBT exploits restore from it, and a study resumed after its
driver died re-launches the trials left RUNNING from the checkpoint recorded in their user attr ``checkpoint``
(``records.fail_orphaned_trials`` fails only those without one). Each trial records ``node_id`` and ``hostname``.

Population-based training (``scheduler: pbt``) maps onto Optuna as one trial per population member: its params
are the initial values the sampler gave it; each exploit appends ``{epoch, cloned_from_trial, new_params}`` to its
user attr ``pbt_lineage`` (it took that trial's state after ``epoch`` and trains on with ``new_params``); its
curves are what it reported epoch by epoch, and its value is what it reached at the end.
"""

from .._optuna import open_storage
from ..models import StudyState
from ..optuna_queries import load_study, study_counts
from ..trial_report import FailKind
from .factories import build_distributions, build_sampler, build_scheduler
from .ray_setup import ensure_ray
from .records import StudyOutcome
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
