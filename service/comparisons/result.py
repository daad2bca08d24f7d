"""A comparison's result as plain dataclasses: what the worker stores and the report draws.

What is stored is what was read from the database (trials, re-run scores, each study's ``epochs_spent``, each
repeat's searched ranges and winner); everything derived (arm summaries, differences, the verdicts at each look, the
spending check) is computed from those numbers by :mod:`service.comparisons.stats` when it is read, never stored
twice, so the REST resource, the HTML page and the Markdown files cannot disagree.

**The rules behind a verdict** (:meth:`ComparisonResult.verdicts`; R2–R6 of :mod:`search_spaces.comparison`), each
applied to every pair of arms alike; a rule that cannot be checked makes the verdict
:attr:`~Verdict.INCONCLUSIVE` with the reason:

- both arms have a result at the batch size, and none of their studies failed;
- they share at least :data:`~service.comparisons.stats.MIN_REPEATS` tuning repeats with re-runs on shared seeds;
- the two arms spent their tuning budgets equally: within one trial's epochs of each other in every repeat;
- ``d_r`` (per repeat, the mean over its seeds of arm − other) is tested by a paired t over repeats at each look
  ``n = repeats_min … repeats_max`` (as many as were run), at the α :func:`~service.comparisons.stats.look_alphas`
  spends there: ``α/m`` per primary verdict (``m`` = primary arms × batch sizes, Bonferroni), ``α`` per secondary
  one; the first look whose interval decides (better, worse, equivalent within ``±margin``) freezes the verdict,
  and one no look decided is ``undecided``;
- every verdict carries its minimum detectable difference at ``repeats_max`` with the SD pooled over the batch
  size's verdicts;
- **search check**: where the arm under test's search space contains another arm's configurations (TVLARS with
  λ → 0 is LARS at LR/(α + 1), its declaration's ``contains``) and it is nonetheless ``worse`` than that arm, the
  search failed, and every verdict at that batch size is ``inconclusive: search failure``. Where that check cannot
  run, a ``worse`` at that batch size is ``inconclusive`` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from search_spaces.comparison import MAX_RERUN_SEEDS, RERUN_SEED_BASE
from tvlars.optim import get_optimizer
from tvlars.train.metrics import Metric

from .stats import (
    ALPHA,
    MIN_REPEATS,
    MIN_SEEDS,
    Difference,
    Look,
    SpendingCheck,
    Summary,
    Verdict,
    bootstrap_difference,
    bootstrap_mean,
    decide,
    look_alphas,
    minimum_detectable_difference,
    paired_t,
    pooled_sd,
    repeat_differences,
    seeds_per_repeat,
    t_interval,
    tost,
    within_margin,
)

__all__ = [
    "ArmResult",
    "ComparisonResult",
    "ParamRange",
    "RepeatRecord",
    "RerunRecord",
    "TrialRecord",
    "VerdictRecord",
    "contains",
    "result_from_json",
]

#: How a tuning trial's config was chosen: a reference point the spec enqueued ("reference"), a quasi-random
#: (Sobol') point, a random draw (RandomSampler, or TPE's start-up trials), a TPE proposal, another sampler's, or any
#: trial of a range-check extension study.
TRIAL_KINDS = ("reference", "quasi-random", "random", "tpe", "other", "extension")
#: Fixed keys that give plain LARS a schedule TVLARS's φ cannot express (warm-up, cosine decay).
_SCHEDULE_KEYS = {"lr_schedule": "constant", "warmup_epochs": 0}


@dataclass(frozen=True)
class TrialRecord:
    """One tuning trial: its Optuna state (COMPLETE, PRUNED, FAIL), params, objective value, epochs and seconds."""

    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    epochs: int
    wall_seconds: float | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)
    repeat: int = 0  # which tuning repeat's study (tuning or range extension) ran it
    seed: int | None = None  # the seed it trained with (its TrialAttr.SEED); None: stored before the attribute
    kind: str | None = None  # how its config was chosen: one of TRIAL_KINDS; None: stored before kinds
    steps: int | None = None  # optimizer steps it ran (the trainer's cumulative count at its last epoch)
    examples: int | None = None  # training examples it processed: steps × batch size


@dataclass(frozen=True)
class RerunRecord:
    """One re-run of a tuned config on a fresh seed, at full epochs: its final score and per-epoch rows."""

    seed: int
    score: float  # test accuracy at the best validation epoch
    curve: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 1  # which of the top-k configs (1 = the best by validation)
    repeat: int = 0  # which tuning repeat's winner


@dataclass(frozen=True)
class ParamRange:
    """A searched parameter in one repeat: the range its winner was chosen from, and where the winner sits in it.

    ``position`` is 0 at ``low`` and 1 at ``high`` (log space for a log range); ``edge`` marks the outer 10 % at
    either end of the range the winner was chosen from, log or linear, as the range check does
    (:func:`~service.comparisons.stats.at_edge`), once no extension is left to widen it; ``extended``: the range
    check widened it.
    """

    low: float
    high: float
    log: bool
    value: float | None
    position: float | None
    edge: bool
    extended: bool = False


@dataclass(frozen=True)
class RepeatRecord:
    """One tuning repeat of an arm at a batch size: its studies, stored spending, winner and searched ranges."""

    repeat: int
    studies: list[str]  # the tuning study, then any range-extension study
    epochs_spent: int  # the studies' stored epochs_spent, summed
    best_value: float | None  # the winner's tuning objective (validation)
    best_params: dict[str, Any]
    ranges: dict[str, ParamRange] = field(default_factory=dict)


@dataclass
class ArmResult:
    """One optimizer at one batch size: its studies, trials, tuned config, re-runs, importances and repeats."""

    label: str
    optimizer: str
    batch_size: int
    studies: list[int | str]  # the service's study ids (tuning studies, extensions, then re-runs)
    best_params: dict[str, Any]  # the winner of the repeat with the best validation score
    fixed: dict[str, Any]
    epochs: int  # a full trial's epochs
    steps_per_epoch: int
    trials: list[TrialRecord] = field(default_factory=list)
    reruns: list[RerunRecord] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    repeats: list[RepeatRecord] = field(default_factory=list)
    epochs_spent: int = 0  # the tuning studies' stored epochs_spent, summed over repeats
    problems: list[str] = field(default_factory=list)  # why a rule cannot be checked (a failed or missing study)

    @property
    def scores(self) -> dict[int, dict[int, float]]:
        """``{repeat: {j: score}}`` of each repeat's winner (rank 1): the numbers every verdict resamples.

        ``j`` is the re-run seed's place in its repeat (seed ``RERUN_SEED_BASE + r · S + j``, R1; S =
        ``MAX_RERUN_SEEDS``): the seeds are
        nested in the repeat, so repeat ``r``'s ``j`` is the same seed in every arm (arms pair on it) and another
        seed in every other repeat."""
        table: dict[int, dict[int, float]] = {}
        for r in self.reruns:
            if r.rank == 1:
                j = (r.seed - RERUN_SEED_BASE) % MAX_RERUN_SEEDS  # (a result from before R1: RERUN_SEED_BASE + j)
                table.setdefault(r.repeat, {})[j] = r.score
        return table

    @property
    def rerun(self) -> Summary | None:
        """Mean over repeats × seeds with its two-level bootstrap interval, and each repeat's mean (the spread)."""
        scores = self.scores
        return bootstrap_mean(scores) if seeds_per_repeat(scores) else None

    @property
    def tuning_draws(self) -> list[TrialRecord]:
        """The tuning trials that completed, by repeat and number: what budget curves and LR sensitivity draw on.
        PRUNED trials are left out (their value is an early epoch's accuracy, not what a finished draw reached) and so
        are FAIL ones (no value); the report's arm table counts the failures beside them."""
        return sorted((t for t in self.trials if t.state == "COMPLETE"), key=lambda t: (t.repeat, t.number))

    @property
    def wall_seconds(self) -> float:
        """Wall seconds of every tuning trial (a trial with unknown time adds 0)."""
        return float(sum(t.wall_seconds for t in self.trials if t.wall_seconds is not None))

    @property
    def trial_kinds(self) -> dict[str, int]:
        """How many tuning trials of each kind ran (:data:`TRIAL_KINDS`; ``unknown``: stored before kinds)."""
        counts = dict.fromkeys(TRIAL_KINDS, 0)
        for t in self.trials:
            counts[t.kind or "unknown"] = counts.get(t.kind or "unknown", 0) + 1
        return counts

    @property
    def edge_note(self) -> str | None:
        """ "optimum at the edge of the searched range" with where, when a repeat's winner still lies in the outer
        10 % of a range the range check could not (or may no longer) widen; None otherwise."""
        where = [
            f"{name} (repeat {r.repeat}, position {p.position:.2f})"
            for r in self.repeats
            for name, p in r.ranges.items()
            if p.edge and p.position is not None
        ]
        return "optimum at the edge of the searched range: " + ", ".join(where) if where else None

    def spent_in(self, repeat: int) -> int | None:
        """Epochs the repeat's studies spent, as stored; ``None`` if this arm has no such repeat."""
        return next((r.epochs_spent for r in self.repeats if r.repeat == repeat), None)


def contains(outer: ArmResult, inner: ArmResult) -> bool:
    """Whether ``outer``'s search space contains ``inner``'s configurations: its optimizer's declaration says so
    (:attr:`tvlars.optim.OptimizerSpec.contains`: TVLARS at λ → 0 is LARS, and that point is enqueued in every arm).

    ``inner`` must be the plain special case (no warm-up, constant schedule), and the fixed values both arms set
    must agree.
    """
    try:
        if inner.optimizer not in get_optimizer(outer.optimizer).contains:
            return False
    except ValueError:  # an optimizer no longer installed here: nothing is known to contain anything
        return False
    if any(inner.fixed.get(k, plain) not in (plain, None) for k, plain in _SCHEDULE_KEYS.items()):
        return False
    return all(outer.fixed[k] == v for k, v in inner.fixed.items() if k in outer.fixed)


@dataclass(frozen=True)
class VerdictRecord:
    """The arm under test against another at one batch size: the difference (if it could be computed), the verdict,
    why it is inconclusive (``reason``), whether it is primary (tested at ``α/m``) or secondary (at ``α``), and
    ``notes`` (within the margin; secondary; undecided so far)."""

    batch_size: int
    arm: str
    against: str
    difference: Difference | None
    verdict: Verdict
    reason: str | None = None  # why a verdict is inconclusive
    primary: bool = True
    notes: list[str] = field(default_factory=list)


@dataclass
class ComparisonResult:
    """A whole comparison. ``arms[0]``'s label is the arm under test (the comparison spec's first arm)."""

    name: str
    workload: dict[str, Any]
    objective: str
    arms: list[ArmResult]
    state: str = "SUCCEEDED"
    target_val_acc: float | None = None
    title: str | None = None  # the page's title; says "example" for fabricated data
    rerun_metric: str = Metric.TEST_ACC_AT_BEST_VAL.value
    curve_metric: str = Metric.VAL_ACC.value
    tuning_repeats: int = 1  # the last look's repeats (repeats_max)
    range_check: str | None = None  # "extend" | "flag"; None: a result stored before the range check
    repeats_min: int | None = None  # the first look's repeats; None: tuning_repeats (one look)
    margin: float = 1.0  # δ, percentage points
    primary: list[str] | None = None  # primary arms' labels; None: every arm after the first
    alpha: float = ALPHA  # the family's α

    @property
    def labels(self) -> list[str]:
        """Arm labels in the spec's order, the arm under test first."""
        return list(dict.fromkeys(a.label for a in self.arms))

    @property
    def batch_sizes(self) -> list[int]:
        return sorted({a.batch_size for a in self.arms})

    @property
    def looks(self) -> range:
        """The looks' repeat counts, ``repeats_min … tuning_repeats`` (R4)."""
        return range(self.repeats_min or self.tuning_repeats, self.tuning_repeats + 1)

    @property
    def primary_labels(self) -> list[str]:
        return list(self.primary) if self.primary is not None else self.labels[1:]

    @property
    def m(self) -> int:
        """How many verdicts share the family's α (R3): primary arms × batch sizes."""
        return max(1, len([x for x in self.primary_labels if x in self.labels[1:]]) * len(self.batch_sizes))

    def look_alphas(self, primary: bool) -> dict[int, float]:
        """α spent at each look by a primary (``α/m`` in all) or a secondary (``α``) verdict."""
        return look_alphas(self.alpha, self.m if primary else 1, self.looks.start, self.looks.stop - 1)

    def arm(self, label: str, batch_size: int) -> ArmResult | None:
        return next((a for a in self.arms if a.label == label and a.batch_size == batch_size), None)

    def spending(self) -> list[SpendingCheck]:
        """Per batch size and repeat, every arm's stored tuning epochs and whether they lie within one trial's."""
        checks = []
        for bs in self.batch_sizes:
            arms = [a for a in (self.arm(label, bs) for label in self.labels) if a is not None]
            limit = max(a.epochs for a in arms)
            repeats = sorted({r.repeat for a in arms for r in a.repeats})
            if not repeats:  # a result stored before repeats: the arms' totals
                checks.append(SpendingCheck(bs, None, {a.label: a.epochs_spent for a in arms}, limit))
            for repeat in repeats:
                spent = {a.label: s for a in arms if (s := a.spent_in(repeat)) is not None}
                checks.append(SpendingCheck(bs, repeat, spent, limit))
        return checks

    def verdicts(self) -> list[VerdictRecord]:
        """Per batch size, the first arm against each other arm, by the rules in the module docstring."""
        test, *others = self.labels
        spending = self.spending()
        records: list[VerdictRecord] = []
        for bs in self.batch_sizes:
            mine = self.arm(test, bs)
            at_bs: list[VerdictRecord] = []
            for other in others:
                theirs = self.arm(other, bs)
                primary = other in self.primary_labels
                reason = _unchecked(mine, theirs, test, other, bs, [c for c in spending if c.batch_size == bs])
                if reason is not None or mine is None or theirs is None:
                    at_bs.append(VerdictRecord(bs, test, other, None, Verdict.INCONCLUSIVE, reason, primary))
                    continue
                diff, verdict = self._sequential(mine, theirs, primary)
                at_bs.append(VerdictRecord(bs, test, other, diff, verdict, None, primary))
            records += self._with_mdd(at_bs)
        return [replace(r, notes=self._notes(r)) for r in self._search_check(records)]

    def _sequential(self, mine: ArmResult, theirs: ArmResult, primary: bool) -> tuple[Difference, Verdict]:
        """The looks of one verdict (R4/R5): a paired t over the first ``n`` repeats at each look's α; the first look
        that decides freezes the verdict."""
        _, d = repeat_differences(mine.scores, theirs.scores)
        alphas = self.look_alphas(primary)
        margin = self.margin / 100
        looks: list[Look] = []
        for n in self.looks:
            if n > d.size:
                break
            t = paired_t(d[:n])
            sd = t.sd if t.sd is not None else 0.0
            low, high = (float(x) for x in t_interval(t.mean, sd, n, alphas[n]))
            verdict = decide(low, high, margin)
            looks.append(Look(n, alphas[n], t.mean, low, high, t.p_value, tost(d[:n], margin), verdict))
            if verdict.is_decided:
                break
        last = looks[-1] if looks else None
        boot = bootstrap_difference(mine.scores, theirs.scores)
        full = paired_t(d)
        diff = Difference(
            mean=last.mean if last else full.mean,
            sd=paired_t(d[: last.n]).sd if last else full.sd,
            n=last.n if last else int(d.size),
            ci_low=last.ci_low if last else None,
            ci_high=last.ci_high if last else None,
            p_value=last.p_value if last else None,
            p_equivalence=last.p_equivalence if last else None,
            alpha=last.alpha if last else alphas[max(alphas)],
            margin=margin,
            look=last.n if last and last.verdict.is_decided else None,
            repeat_differences=d.tolist(),
            n_seeds=seeds_per_repeat(mine.scores, theirs.scores),
            boot_low=boot[0] if boot else None,
            boot_high=boot[1] if boot else None,
            looks=looks,
        )
        return diff, last.verdict if last else Verdict.UNDECIDED

    def _with_mdd(self, records: list[VerdictRecord]) -> list[VerdictRecord]:
        """R6: each verdict's MDD at the last look's repeats and α, the SD pooled over the batch size's verdicts."""
        measured = [(r.difference.sd, r.difference.n) for r in records if r.difference and r.difference.sd is not None]
        measured = [(sd, n) for sd, n in measured if n >= 2]
        if not measured:
            return records
        sd, df = pooled_sd([x[0] for x in measured], [x[1] for x in measured])
        n_max = self.looks.stop - 1
        out = []
        for r in records:
            if r.difference is not None and n_max >= 2:
                alpha = self.look_alphas(r.primary)[n_max]
                mdd = minimum_detectable_difference(sd, n_max, alpha, df=df)
                r = replace(r, difference=replace(r.difference, mdd=mdd, mdd_sd=sd, mdd_df=df))
            out.append(r)
        return out

    def _notes(self, r: VerdictRecord) -> list[str]:
        notes = []
        d = r.difference
        if d is not None and within_margin(r.verdict, d.mean, d.margin):
            notes.append(f"within the margin: |{100 * d.mean:.2f}| pp < δ = {self.margin:g} pp")
        if not r.primary:
            notes.append(f"secondary: tested at α = {self.alpha:g} per verdict, not corrected for the {self.m} primary")
        arms = (self.arm(r.arm, r.batch_size), self.arm(r.against, r.batch_size))
        notes += [f"{a.label}: {a.edge_note}" for a in arms if a is not None and a.edge_note]  # the range check's
        if r.verdict is Verdict.UNDECIDED and d is not None:
            n_max = self.looks.stop - 1
            if d.n < n_max:
                notes.append(f"after {d.n} of up to {n_max} repeats: more rounds may decide")
            else:
                notes.append("not decided at the last look: this is not evidence of no difference")
        return notes

    def _search_check(self, records: list[VerdictRecord]) -> list[VerdictRecord]:
        """A tuned arm worse than an arm its space contains: every verdict at that batch size is a search failure."""
        out = []
        for bs in self.batch_sizes:
            at_bs = [r for r in records if r.batch_size == bs]
            mine = self.arm(at_bs[0].arm, bs) if at_bs else None
            checks = [r for r in at_bs if mine and (theirs := self.arm(r.against, bs)) and contains(mine, theirs)]
            failed = next((r for r in checks if r.verdict is Verdict.WORSE), None)
            unchecked = next((r for r in checks if not r.verdict.is_conclusive), None)
            for r in at_bs:
                if failed is not None and r.difference is not None:
                    d = failed.difference
                    why = (
                        f"tuned {r.arm} is worse than tuned {failed.against} (d̄ {100 * d.mean:+.2f} pp, interval "
                        f"[{100 * d.ci_low:+.2f}, {100 * d.ci_high:+.2f}] at α {d.alpha:.3g}, {d.n} repeats), whose "
                        "configurations its space contains: its search failed"
                    )  # fmt: skip
                    r = replace(r, verdict=Verdict.SEARCH_FAILURE, reason=why)
                elif failed is None and unchecked is not None and r.verdict is Verdict.WORSE:
                    why = f"the search check against {unchecked.against} could not run ({unchecked.reason})"
                    r = replace(r, verdict=Verdict.INCONCLUSIVE, reason=why)
                out.append(r)
        return out

    def still_open(self, batch_size: int) -> bool:
        """Whether another round could change a verdict at ``batch_size`` (R4): one is ``undecided`` and its arms have
        fewer than ``tuning_repeats`` (the last look's) repeats."""
        return any(
            r.verdict is Verdict.UNDECIDED and r.difference is not None and r.difference.n < self.tuning_repeats
            for r in self.verdicts()
            if r.batch_size == batch_size
        )


def _unchecked(
    mine: ArmResult | None, theirs: ArmResult | None, test: str, other: str, bs: int, spending: list[SpendingCheck]
) -> str | None:
    """Why a verdict between two arms at one batch size cannot be stated, or ``None`` when every rule can be checked."""
    for label, arm in ((test, mine), (other, theirs)):
        if arm is None:
            return f"{label} has no result at batch size {bs}"
        if arm.problems:
            return f"{label}: " + "; ".join(arm.problems)
    assert mine is not None and theirs is not None
    repeats, _ = repeat_differences(mine.scores, theirs.scores)
    if len(repeats) < MIN_REPEATS:
        return (
            f"{len(repeats)} tuning repeat(s) with re-runs on shared seeds; a paired t over repeats needs "
            f"≥ {MIN_REPEATS}"
        )
    if seeds_per_repeat(mine.scores, theirs.scores) < MIN_SEEDS:
        return "no re-run seed shared by both arms in every repeat"
    for check in spending:
        if test in check.spent and other in check.spent and abs(check.spent[test] - check.spent[other]) > check.limit:
            where = "" if check.repeat is None else f" in repeat {check.repeat}"
            return (
                f"unequal spending{where}: {test} {check.spent[test]} epochs, {other} {check.spent[other]} "
                f"(more than one trial's {check.limit} apart)"
            )
    return None


def result_from_json(data: dict[str, Any]) -> ComparisonResult:
    """A stored result back as dataclasses (what the report and the verdicts are computed from).

    A result stored before tuning repeats has no ``repeats`` and no stored ``epochs_spent``: its arms' spending is
    then the sum of their trials' epochs, as it was computed then.
    """
    arms = []
    for a in data["arms"]:
        a = dict(a)
        a["trials"] = [TrialRecord(**t) for t in a["trials"]]
        a["reruns"] = [RerunRecord(**r) for r in a["reruns"]]
        a["repeats"] = [
            RepeatRecord(**{**r, "ranges": {k: ParamRange(**v) for k, v in r.get("ranges", {}).items()}})
            for r in a.get("repeats", [])
        ]
        if "epochs_spent" not in a:
            a["epochs_spent"] = sum(t.epochs for t in a["trials"])
        arms.append(ArmResult(**a))
    return ComparisonResult(**{**data, "arms": arms})
