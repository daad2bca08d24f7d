"""A comparison's report: one self-contained HTML page (plots as inline PNG data URIs) or Markdown + PNG files.

A "reading" paragraph generated from the verdicts alone (:func:`reading`, R11: no sentence of direction or cause
without a decided verdict or a number beside it). Four tables — verdicts (per verdict: d̄ and its t interval at the
α of its look, the paired-t p-value, that α, the minimum detectable difference, the look it was decided at, primary or
secondary, the verdict and why; the two-level bootstrap interval beside them, descriptive only), arms
(re-run summary, tuning spread across repeats, stored epochs spent), the spending check (every arm's epochs per batch
size and repeat, within one trial's epochs or not) and the range positions (where each tuned value sits in its
range, which ranges the range check extended, which optima lie in the outer 10 %) — and eight plots, drawn with
matplotlib's Agg backend (no display, no external assets):

1. ``verdicts`` — the difference (arm under test − each other arm) per batch size with its t interval at the α of
   its look, and the margin ±δ;
2. ``accuracy_vs_batch_size`` — each arm's re-run mean with its 95 % interval;
3. ``tuning_spread`` — each repeat's winner's mean over seeds, per arm (a strip plot): what another tuning gives;
4. ``learning_curves`` — the re-runs' per-epoch curve, mean ± one standard deviation over repeats and seeds;
5. ``budget_curves`` — expected best validation score against number of trials, with its bootstrap band, from
   completed trials only (a pruned trial's value is an early epoch's; a failed one has none: the arm table counts them);
6. ``lr_sensitivity`` — each completed tuning trial's score against its effective LR (LARS + warm-up's base LR ×
   bs/256);
7. ``schedules`` — each tuned arm's step multiplier over training: TVLARS's LR·φ(t) next to warm-up LARS's LR;
8. ``importances`` — Optuna parameter importances per arm (averaged over repeats).

The numbers in both formats' tables go through the same formatters (:func:`format_summary`,
:func:`format_difference`, :func:`format_p`), so a test can look for exactly the stored numbers.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: the service has no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from search_spaces.comparison import RANGE_EDGE  # noqa: E402
from tvlars.optim import OptimizerSpec, get_optimizer  # noqa: E402
from tvlars.schedules import warmup_cosine_factor  # noqa: E402
from tvlars.train.metrics import Metric  # noqa: E402

from .result import ArmResult, ComparisonResult  # noqa: E402
from .stats import (  # noqa: E402
    Difference,
    Summary,
    Verdict,
    expected_best,
    lr_sensitivity,
    time_to_target,
)

__all__ = [
    "PLOTS",
    "Plot",
    "effective_lr",
    "format_difference",
    "format_p",
    "format_summary",
    "reading",
    "render_figures",
    "render_html",
    "render_markdown",
    "step_multiplier",
    "write_markdown",
]

_DPI = 100
_N_BOOT = 500


# --- numbers ---------------------------------------------------------------------------------------------------------


def _pct(x: float | None, signed: bool = False) -> str:
    return "—" if x is None else f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def format_summary(s: Summary | None) -> str:
    """``91.23 % ± 0.41 [90.21, 92.25] (3 repeats × 3 seeds)`` — mean ± std, 95 % bootstrap interval, in percent.

    One score has no ± and no interval.
    """
    if s is None:
        return "no re-runs"
    if s.ci_low is None:
        return f"{_pct(s.mean)} % (n=1, no interval)"
    return (
        f"{_pct(s.mean)} % ± {_pct(s.std)} [{_pct(s.ci_low)}, {_pct(s.ci_high)}] "
        f"({s.n_repeats} repeats × {s.n_seeds} seeds)"
    )


def format_difference(d: Difference | None) -> str:
    """``+1.20 pp [+0.40, +2.00] (5 repeats × 3 seeds)`` — d̄ in percentage points with its t interval at the α of
    its look (paired over repeats)."""
    if d is None:
        return "—"
    size = f"{d.n} repeats × {d.n_seeds} seeds"
    if d.ci_low is None:
        return f"{_pct(d.mean, True)} pp ({size}, no interval)"
    return f"{_pct(d.mean, True)} pp [{_pct(d.ci_low, True)}, {_pct(d.ci_high, True)}] ({size})"


def format_p(d: Difference | None) -> str:
    """``0.0123`` — the paired t's two-sided p-value over repeats (``—`` where the differences do not vary)."""
    if d is None or d.p_value is None:
        return "—"
    return f"{d.p_value:.3g}"


def format_alpha(d: Difference | None) -> str:
    """``0.0075`` — the α spent at the verdict's look (the deciding one, else the last)."""
    return "—" if d is None else f"{d.alpha:.3g}"


def format_mdd(d: Difference | None) -> str:
    """``1.85 pp`` — the minimum detectable difference at 80 % power (R6)."""
    return "—" if d is None or d.mdd is None else f"{_pct(d.mdd)} pp"


def format_look(d: Difference | None, n_max: int) -> str:
    """``4 of ≤ 6 repeats`` — the look that decided, or ``not decided (5 of ≤ 6 repeats)``."""
    if d is None:
        return "—"
    if d.look is None:
        return f"not decided ({d.n} of ≤ {n_max} repeats)"
    return f"{d.look} of ≤ {n_max} repeats"


def format_bootstrap(d: Difference | None) -> str:
    """The descriptive two-level bootstrap 95 % interval, in pp."""
    if d is None or d.boot_low is None:
        return "—"
    return f"[{_pct(d.boot_low, True)}, {_pct(d.boot_high, True)}]"


def format_spread(s: Summary | None) -> str:
    """``69.71–70.60 % over 3 repeats`` — the lowest and highest repeat's mean over seeds."""
    if s is None or not s.repeat_means:
        return "—"
    return f"{_pct(min(s.repeat_means))}–{_pct(max(s.repeat_means))} % over {len(s.repeat_means)} repeats"


def effective_lr(arm: ArmResult, lr: float) -> float:
    """The LR the optimizer steps with at the arm's batch size, under its LR scaling rule (LARS + warm-up searches a
    base LR per 256 examples)."""
    config = {**arm.fixed, **arm.best_params}
    spec = _declaration(arm)
    if spec is None:
        return lr
    return spec.training(arm.batch_size, arm.epochs, arm.steps_per_epoch, config.get("lr_scaling")).lr(lr)


def _declaration(arm: ArmResult) -> OptimizerSpec | None:
    """The arm's optimizer's declaration; None where it is no longer installed here (its plot shows the LR alone)."""
    try:
        return get_optimizer(arm.optimizer)
    except ValueError:
        return None


def step_multiplier(arm: ArmResult) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, multiplier)`` of the tuned config: the factor on the optimizer's step at each optimizer step.

    The effective LR times the trainer's LR schedule (the declaration's recipe unless the config sets
    ``warmup_epochs`` / ``lr_schedule``: warm-up → cosine) times the optimizer's own multiplier where its declaration
    has one (TVLARS: φ(t), with ``lam_steps`` and ``delay_fraction`` converted by the declaration as the trainer
    converts them).
    """
    config = {**arm.fixed, **arm.best_params}
    spec = _declaration(arm)
    if spec is None:
        steps = np.arange(1, max(arm.epochs * arm.steps_per_epoch, 1) + 1)
        return steps, np.full(steps.shape, float(config.get("lr", 1.0)))
    training = spec.training(arm.batch_size, arm.epochs, max(arm.steps_per_epoch, 1), config.get("lr_scaling"))
    total = max(training.total_steps, 1)
    steps = np.arange(1, total + 1)
    lr = effective_lr(arm, float(config.get("lr", spec.defaults["lr"])))
    values = np.full(steps.shape, lr)
    warmup = spec.warmup_epochs(config.get("warmup_epochs"), arm.epochs)
    if spec.schedule(config.get("lr_schedule"), warmup) == "warmup_cosine":
        warmup_steps = round(float(warmup) * arm.steps_per_epoch)
        values = values * np.array([warmup_cosine_factor(int(s) - 1, warmup_steps, total) for s in steps])
    if spec.step_factor is not None:
        given = {k: v for k, v in config.items() if k in spec.keys}
        values = values * np.asarray(spec.step_factor(steps.astype(np.float64), spec.arguments(given, training)))
    return steps, values


# --- plots -----------------------------------------------------------------------------------------------------------


def _colors(result: ComparisonResult) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {label: cmap(i % 10) for i, label in enumerate(result.labels)}


def _panels(n: int, title: str, width: float = 4.0, height: float = 3.0) -> tuple[Figure, list[Any]]:
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, flat[:n]


def _label_batch_panel(ax: Any, batch_size: int, xlabel: str, ylabel: str) -> None:
    """A per-batch-size panel's title, axis labels and grid."""
    ax.set_title(f"batch {batch_size}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _with_legend(fig: Figure, axes: list[Any]) -> Figure:
    """Panels done: the arms' legend on the first, the layout tightened."""
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _plot_verdicts(result: ComparisonResult) -> Figure:
    records = result.verdicts()
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(records), 2) + 1.5))
    colors = _colors(result)
    for y, rec in enumerate(records):
        d = rec.difference
        if d is None:
            ax.annotate(rec.verdict.value, (0, y), xytext=(6, -3), textcoords="offset points", fontsize=8)
            continue
        low = d.mean if d.ci_low is None else d.ci_low
        high = d.mean if d.ci_high is None else d.ci_high
        ax.errorbar(
            100 * d.mean, y, xerr=[[100 * (d.mean - low)], [100 * (high - d.mean)]], fmt="o",
            color=colors[rec.against], capsize=4,
        )  # fmt: skip
        ax.annotate(rec.verdict.value, (100 * high, y), xytext=(6, -3), textcoords="offset points", fontsize=8)
    ax.axvline(0, color="grey", lw=1)
    for x in (-result.margin, result.margin):
        ax.axvline(x, color="grey", lw=1, ls=":")
    ax.set_yticks(range(len(records)), [f"bs {r.batch_size}: {r.arm} − {r.against}" for r in records])
    ax.set_xlabel(f"difference in {result.rerun_metric} (pp; t interval at the look's α; dotted: ±margin)")
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


def _plot_accuracy_vs_batch_size(result: ComparisonResult) -> Figure:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = _colors(result)
    for label in result.labels:
        xs, ys, lo, hi = [], [], [], []
        for bs in result.batch_sizes:
            arm = result.arm(label, bs)
            s = arm.rerun if arm is not None else None
            if s is None:
                continue
            xs.append(bs)
            ys.append(100 * s.mean)
            lo.append(100 * (s.mean - (s.ci_low if s.ci_low is not None else s.mean)))
            hi.append(100 * ((s.ci_high if s.ci_high is not None else s.mean) - s.mean))
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, label=label, color=colors[label])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"{result.rerun_metric} (%, mean and 95 % interval)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _plot_tuning_spread(result: ComparisonResult) -> Figure:
    fig, axes = _panels(
        len(result.batch_sizes), f"each tuning repeat's winner: mean {result.rerun_metric} over the re-run seeds"
    )
    colors = _colors(result)
    for ax, bs in zip(axes, result.batch_sizes, strict=True):
        for x, label in enumerate(result.labels):
            arm = result.arm(label, bs)
            s = arm.rerun if arm is not None else None
            if s is None:
                continue
            ys = 100 * np.array(s.repeat_means)
            jitter = np.linspace(-0.12, 0.12, ys.size) if ys.size > 1 else np.zeros(1)
            ax.scatter(x + jitter, ys, s=24, color=colors[label], label=label, zorder=3)
            ax.hlines(100 * s.mean, x - 0.3, x + 0.3, color=colors[label], lw=2)
        ax.set_xticks(range(len(result.labels)), result.labels, rotation=30, fontsize=8)
        _label_batch_panel(ax, bs, "arm (bar: mean over repeats)", f"{result.rerun_metric} (%)")
    return _with_legend(fig, axes)


def _plot_learning_curves(result: ComparisonResult) -> Figure:
    fig, axes = _panels(
        len(result.batch_sizes), f"re-runs: {result.curve_metric} per epoch, mean ± 1 std over repeats and seeds"
    )
    colors = _colors(result)
    for ax, bs in zip(axes, result.batch_sizes, strict=True):
        for label in result.labels:
            arm = result.arm(label, bs)
            curves = [r.curve for r in (arm.reruns if arm else []) if r.rank == 1 and r.curve]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            y = np.array([[float(row.get(result.curve_metric, np.nan)) for row in c[:n]] for c in curves]) * 100
            x = [int(row[Metric.EPOCH]) for row in curves[0][:n]]
            mean, std = np.nanmean(y, axis=0), np.nanstd(y, axis=0)
            ax.plot(x, mean, color=colors[label], label=label)
            ax.fill_between(x, mean - std, mean + std, color=colors[label], alpha=0.2)
        _label_batch_panel(ax, bs, Metric.EPOCH.value, f"{result.curve_metric} (%)")
    return _with_legend(fig, axes)


def _plot_budget_curves(result: ComparisonResult) -> Figure:
    fig, axes = _panels(
        len(result.batch_sizes),
        f"expected best {result.objective} after n drawn trials (not reference points; repeats pooled; 95 % bootstrap)",
    )
    colors = _colors(result)
    rng = np.random.default_rng(0)
    for ax, bs in zip(axes, result.batch_sizes, strict=True):
        for label in result.labels:
            arm = result.arm(label, bs)
            draws = _drawn(arm) if arm else []
            if not draws:
                continue
            eb = expected_best([t.value for t in draws], n_boot=_N_BOOT, rng=rng)
            ax.plot(eb.n, 100 * np.array(eb.mean), color=colors[label], label=label)
            ax.fill_between(eb.n, 100 * np.array(eb.low), 100 * np.array(eb.high), color=colors[label], alpha=0.2)
        _label_batch_panel(ax, bs, "number of trials", f"{result.objective} (%)")
    return _with_legend(fig, axes)


def _plot_lr_sensitivity(result: ComparisonResult) -> Figure:
    fig, axes = _panels(len(result.batch_sizes), f"final {result.objective} of each completed trial against its LR")
    colors = _colors(result)
    for ax, bs in zip(axes, result.batch_sizes, strict=True):
        for label in result.labels:
            arm = result.arm(label, bs)
            trials = [t for t in (arm.tuning_draws if arm else []) if "lr" in t.params and t.state == "COMPLETE"]
            if not trials:
                continue
            sens = lr_sensitivity([effective_lr(arm, float(t.params["lr"])) for t in trials], [t.value for t in trials])
            ax.scatter(sens.lrs, 100 * np.array(sens.values), s=14, color=colors[label], label=label, alpha=0.8)
        ax.set_xscale("log")
        _label_batch_panel(ax, bs, "effective LR", f"{result.objective} (%)")
    return _with_legend(fig, axes)


def _plot_schedules(result: ComparisonResult) -> Figure:
    fig, axes = _panels(
        len(result.batch_sizes), "tuned step multiplier: TVLARS lr·φ(t), LARS + warm-up's LR, others' LR"
    )
    colors = _colors(result)
    for ax, bs in zip(axes, result.batch_sizes, strict=True):
        for label in result.labels:
            arm = result.arm(label, bs)
            if arm is None or "lr" not in {**arm.fixed, **arm.best_params}:
                continue
            steps, values = step_multiplier(arm)
            ax.plot(steps, values, color=colors[label], label=label)
        ax.set_yscale("log")
        _label_batch_panel(ax, bs, "optimizer step", "multiplier on the trust-ratio step")
    return _with_legend(fig, axes)


def _plot_importances(result: ComparisonResult) -> Figure:
    fig, axes = _panels(len(result.labels), "Optuna parameter importances (fANOVA, mean over repeats) per arm")
    cmap = plt.get_cmap("viridis")
    for ax, label in zip(axes, result.labels, strict=True):
        arms = [a for a in (result.arm(label, bs) for bs in result.batch_sizes) if a is not None and a.importances]
        params = sorted({p for a in arms for p in a.importances})
        width = 0.8 / max(len(arms), 1)
        for j, arm in enumerate(arms):
            xs = np.arange(len(params)) + j * width
            ax.bar(xs, [arm.importances.get(p, 0.0) for p in params], width, label=f"bs {arm.batch_size}",
                   color=cmap(j / max(len(arms) - 1, 1)))  # fmt: skip
        ax.set_xticks(np.arange(len(params)) + 0.4 - width / 2, params)
        ax.set_ylim(0, 1)
        ax.set_title(label)
        ax.set_ylabel("importance")
        if arms:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no importances (one parameter or too few trials)", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class Plot:
    """One plot of the report: its heading, and what draws it from a result."""

    title: str
    draw: Callable[[ComparisonResult], Figure]


#: The plots in the order the report shows them, by key (a plot's PNG is ``KEY.png``).
PLOTS: dict[str, Plot] = {
    "verdicts": Plot(
        "Verdicts: differences with their t intervals (α at the deciding look) and the margin", _plot_verdicts
    ),
    "accuracy_vs_batch_size": Plot("Accuracy against batch size", _plot_accuracy_vs_batch_size),
    "tuning_spread": Plot("Tuning spread: each repeat's winner", _plot_tuning_spread),
    "learning_curves": Plot("Learning curves of the re-runs", _plot_learning_curves),
    "budget_curves": Plot("Expected best against number of trials", _plot_budget_curves),
    "lr_sensitivity": Plot("LR sensitivity", _plot_lr_sensitivity),
    "schedules": Plot("Tuned schedules", _plot_schedules),
    "importances": Plot("Parameter importances", _plot_importances),
}


def render_figures(result: ComparisonResult) -> dict[str, bytes]:
    """Every plot as PNG bytes, keyed as :data:`PLOTS`."""
    out = {}
    for key, plot in PLOTS.items():
        fig = plot.draw(result)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=_DPI)
        plt.close(fig)
        out[key] = buf.getvalue()
    return out


# --- tables ----------------------------------------------------------------------------------------------------------


def _verdict_rows(result: ComparisonResult) -> list[list[str]]:
    n_max = result.looks.stop - 1
    return [
        [str(v.batch_size), f"{v.arm} − {v.against}", format_difference(v.difference), format_p(v.difference),
         format_alpha(v.difference), format_mdd(v.difference), format_look(v.difference, n_max),
         "primary" if v.primary else "secondary", v.verdict.value, "; ".join([*([v.reason] if v.reason else []),
                                                                             *v.notes]),
         format_bootstrap(v.difference)]
        for v in result.verdicts()
    ]  # fmt: skip


def _spending_head(result: ComparisonResult) -> list[str]:
    return ["batch size", "repeat", *result.labels, "spread", "within one trial's epochs"]


def _spending_rows(result: ComparisonResult) -> list[list[str]]:
    return [
        [str(c.batch_size), "all" if c.repeat is None else str(c.repeat),
         *(str(c.spent.get(label, "—")) for label in result.labels), str(c.spread),
         f"yes (≤ {c.limit})" if c.ok else f"NO (> {c.limit})"]
        for c in result.spending()
    ]  # fmt: skip


_RANGE_HEAD = ["batch size", "arm", "parameter", "range searched", "tuned value per repeat", "position (0..1)",
               "extended", f"outer {RANGE_EDGE:.0%} after the last extension"]  # fmt: skip


def _range_rows(result: ComparisonResult) -> list[list[str]]:
    """Per batch size, arm and searched parameter: each repeat's range, tuned value and position in the range."""
    rows = []
    for bs in result.batch_sizes:
        for label in result.labels:
            arm = result.arm(label, bs)
            for name in sorted({k for r in (arm.repeats if arm else []) for k in r.ranges}):
                per = [(r.repeat, r.ranges[name]) for r in arm.repeats if name in r.ranges]  # type: ignore[union-attr]
                shown = sorted({f"[{_short(p.low)}, {_short(p.high)}]" + (" log" if p.log else "") for _, p in per})
                rows.append(
                    [str(bs), label, name, "; ".join(shown),
                     ", ".join("—" if p.value is None else _short(p.value) for _, p in per),
                     ", ".join("—" if p.position is None else f"{p.position:.2f}" for _, p in per),
                     ", ".join(f"repeat {r}" for r, p in per if p.extended) or "no",
                     ", ".join(f"repeat {r}" for r, p in per if p.edge) or "—"]
                )  # fmt: skip
    return rows


def _arm_rows(result: ComparisonResult) -> list[list[str]]:
    rows = []
    for bs in result.batch_sizes:
        for label in result.labels:
            arm = result.arm(label, bs)
            if arm is None:
                continue
            reach = "—"
            if result.target_val_acc is not None:
                hits = time_to_target(
                    [r.curve for r in arm.reruns if r.rank == 1],
                    result.target_val_acc,
                    metric=result.curve_metric,
                    steps_per_epoch=arm.steps_per_epoch,
                )
                reach = _reach(hits)
            params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(arm.best_params.items()))
            summary = arm.rerun
            steps = sum(t.steps for t in arm.trials if t.steps is not None)
            examples = sum(t.examples for t in arm.trials if t.examples is not None)
            per_trial = arm.epochs * arm.steps_per_epoch
            rows.append(
                [str(bs), label, format_summary(summary), format_spread(summary), params,
                 f"{arm.epochs_spent} ({_trial_counts(arm)})",
                 f"{steps:,} steps, {examples:,} examples ({per_trial:,} steps, {per_trial * bs:,} examples per "
                 "full trial)" if steps else f"{per_trial:,} per full trial",
                 f"{arm.wall_seconds:.0f}", reach]
            )  # fmt: skip
    return rows


def _reach(hits: list) -> str:
    """Seeds that reached the target, and the median time to it over every seed with "never reached" as ∞
    (AlgoPerf's rule: a median beyond the reached half is ∞)."""
    if not hits:
        return "—"
    reached = [h for h in hits if h is not None]

    def median(values: list[float | None]) -> str:
        inf = [math.inf if v is None else float(v) for v in values]
        m = float(np.median(inf))
        return "∞" if math.isinf(m) else f"{m:,.4g}"

    epochs = median([h.epochs if h else None for h in hits])
    steps = median([h.steps if h else None for h in hits]) if all(h is None or h.steps for h in hits) else "?"
    seconds = median([h.wall_seconds if h else None for h in hits])
    return f"{len(reached)}/{len(hits)} seeds; median (never = ∞) {epochs} epochs, {steps} steps, {seconds} s"


def _trial_counts(arm: ArmResult) -> str:
    failed = sum(t.state == "FAIL" for t in arm.trials)
    kinds = ", ".join(f"{n} {kind}" for kind, n in arm.trial_kinds.items() if n)
    return f"{len(arm.trials)} trials: {kinds}" + (f"; {failed} failed" if failed else "")


def _drawn(arm: ArmResult) -> list:
    """The completed tuning trials a sampler drew: not reference points (enqueued), not extensions (another range);
    a result from before trial kinds: every completed tuning trial."""
    return [t for t in arm.tuning_draws if t.kind not in ("reference", "extension")]


_TUNING = "Tuning: trials of each kind, and what more drawn trials would have given"
_TUNING_HEAD = ["batch size", "arm", "trials by kind", "drawn per repeat (n)", "expected best of n/2",
                "expected best of n (95 % bootstrap)", "gain n/2 → n", "saturation"]  # fmt: skip


def _tuning_rows(result: ComparisonResult) -> list[list[str]]:
    """Per arm × batch size: how many trials of each kind ran, and the expected best of n/2 and n drawn trials
    (repeats pooled, reference points left out). Saturated where the gain from n/2 to n is within the half-width
    of the bootstrap interval of the expected best of n: the curve's own spread, not a fixed threshold."""
    rows = []
    rng = np.random.default_rng(0)
    for bs in result.batch_sizes:
        for label in result.labels:
            arm = result.arm(label, bs)
            if arm is None:
                continue
            draws = _drawn(arm)
            repeats = max(1, len({t.repeat for t in draws}))
            n = len(draws) // repeats
            kinds = ", ".join(f"{k} {kind}" for kind, k in arm.trial_kinds.items() if k) or "—"
            if n < 2:
                rows.append([str(bs), label, kinds, str(n), "—", "—", "—", "too few drawn trials to tell"])
                continue
            eb = expected_best([t.value for t in draws], n_max=n, n_boot=_N_BOOT, rng=rng)
            half, full = eb.mean[n // 2 - 1], eb.mean[n - 1]
            spread = (eb.high[n - 1] - eb.low[n - 1]) / 2
            note = "saturated (gain within the spread)" if full - half <= spread else "still rising: more trials pay"
            rows.append(
                [str(bs), label, kinds, str(n), f"{_pct(half)} %",
                 f"{_pct(full)} % [{_pct(eb.low[n - 1])}, {_pct(eb.high[n - 1])}]",
                 f"{(full - half) * 100:+.2f} pp (spread ±{spread * 100:.2f})", note]
            )  # fmt: skip
    return rows


_VERDICT_HEAD = [
    "batch size",
    "difference",
    "d̄ [t interval at α]",
    "p (paired t)",
    "α at its look",
    "MDD (80 % power)",
    "decided at",
    "family",
    "verdict",
    "why / notes",
    "bootstrap 95 % (descriptive)",
]
_VERDICT_COL = _VERDICT_HEAD.index("verdict")


def _arm_head(result: ComparisonResult) -> list[str]:
    target = "time to target" if result.target_val_acc is None else f"reached {_pct(result.target_val_acc)} %"
    return ["batch size", "arm", f"{result.rerun_metric} (re-runs)", "tuning spread", "best params",
            "epochs spent (tuning)", "optimizer steps and examples (tuning)", "seconds", target]  # fmt: skip


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _title(result: ComparisonResult) -> str:
    return result.title or f"Comparison {result.name}"


def _intro(result: ComparisonResult) -> str:
    w = result.workload
    looks = result.looks
    repeats = (
        f"{looks.start} independent tuning repeat(s)"
        if len(looks) == 1
        else f"rounds of independent tuning repeats, {looks.start} to {looks.stop - 1}, with a look after each"
    )
    return (
        f"{w.get('dataset')} / {w.get('model')}, {w.get('epochs')} epochs; state {result.state}; tuned on "
        f"{result.objective} in {repeats} per arm and batch size; each repeat's winner was re-run on the repeat's "
        f"fresh seeds (shared by every arm), which report {result.rerun_metric}. Verdicts compare {result.labels[0]} "
        "with each other arm by a paired t over tuning repeats on d_r, the repeat's mean over its seeds of the "
        f"difference. Each of the {result.m} primary verdicts is tested at α/m = {result.alpha:g}/{result.m} "
        "(Bonferroni), secondary ones at α uncorrected; with several looks 10 % of that is spent evenly over the "
        "interim looks and 90 % at the last. better: the interval lies above 0; worse: below 0; equivalent: inside "
        f"±{result.margin:g} pp; else undecided (the repeats did not decide — not evidence of no difference). A "
        "decision is frozen at its look. The MDD is the true difference the last look would find with 80 % power "
        "(SD pooled over the batch size's verdicts). Inconclusive: a rule could not be checked; 'inconclusive: "
        "search failure': the arm under test is worse than an arm its search space contains (TVLARS with λ → 0 is "
        "LARS). The bootstrap interval is descriptive only."
    )


def reading(result: ComparisonResult) -> str:
    """The report's reading, generated from the verdicts (R11): one sentence per verdict, each with its numbers; a
    direction is stated only for a decided verdict, and an undecided one says what could not be detected."""
    records = result.verdicts()
    if not records:
        return "No verdicts."
    counts = {v: sum(r.verdict is v for r in records) for v in Verdict}
    head = f"Of {len(records)} verdicts: " + ", ".join(f"{n} {v.value}" for v, n in counts.items() if n) + "."
    out = [head]
    for r in records:
        d = r.difference
        who = f"At batch size {r.batch_size}, {r.arm} against {r.against}"
        family = "" if r.primary else " (secondary, uncorrected)"
        if d is None or r.verdict is Verdict.INCONCLUSIVE:
            out.append(f"{who}: inconclusive{family} ({r.reason}).")
            continue
        numbers = (
            f"d̄ = {_pct(d.mean, True)} pp, interval [{_pct(d.ci_low, True)}, {_pct(d.ci_high, True)}] at α "
            f"{d.alpha:.3g}, {d.n} repeats"
        )
        mdd = f"; MDD {_pct(d.mdd)} pp" if d.mdd is not None else ""
        if r.verdict is Verdict.BETTER or r.verdict is Verdict.WORSE:
            margin = " (within the margin)" if any(n.startswith("within the margin") for n in r.notes) else ""
            out.append(f"{who}: {r.verdict.value}{margin}{family} ({numbers}).")
        elif r.verdict is Verdict.EQUIVALENT:
            out.append(f"{who}: equivalent within ±{result.margin:g} pp{family} ({numbers}).")
        elif r.verdict is Verdict.SEARCH_FAILURE:
            out.append(f"{who}: inconclusive, search failure{family} ({r.reason}).")
        else:
            out.append(
                f"{who}: undecided{family} ({numbers}{mdd}): the data neither place the difference on one side of 0 "
                f"nor inside ±{result.margin:g} pp; a difference smaller than the MDD could go unseen."
            )
    return " ".join(out)


_SPENDING = "Spending: tuning epochs per arm (equal within one trial's epochs)"
_RANGES = "Range positions: where each tuned value sits in its range"


# --- HTML ------------------------------------------------------------------------------------------------------------

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    "th{background:#f3f3f3}img{max-width:100%;display:block;margin:0.5em 0 2em}"
    ".better{color:#1a7f37}.worse{color:#cf222e}.equivalent{color:#0969da}.inconclusive{color:#9a6700}"
)


def _css_class(verdict: str) -> str | None:
    if verdict in (Verdict.BETTER, Verdict.WORSE, Verdict.EQUIVALENT):
        return verdict
    return "inconclusive" if verdict in (Verdict.INCONCLUSIVE, Verdict.SEARCH_FAILURE) else None


def _html_table(head: list[str], rows: list[list[str]], verdict_col: int | None = None) -> str:
    out = ["<table><tr>", *(f"<th>{html.escape(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            cls = f' class="{_css_class(cell)}"' if i == verdict_col and _css_class(cell) else ""
            out.append(f"<td{cls}>{html.escape(cell)}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def render_html(result: ComparisonResult, figures: dict[str, bytes] | None = None) -> str:
    """The report as one HTML page: escaped text, the tables, each plot as an inline ``data:image/png`` URI."""
    figures = render_figures(result) if figures is None else figures
    title = html.escape(_title(result))
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{title}</h1><p>{html.escape(_intro(result))}</p>",
        f'<h2>Reading</h2><p id="reading">{html.escape(reading(result))}</p>',
        "<h2>Verdicts</h2>",
        _html_table(_VERDICT_HEAD, _verdict_rows(result), verdict_col=_VERDICT_COL),
        "<h2>Arms</h2>",
        _html_table(_arm_head(result), _arm_rows(result)),
        f"<h2>{_SPENDING}</h2>",
        _html_table(_spending_head(result), _spending_rows(result)),
        f"<h2>{_RANGES}</h2>",
        _html_table(_RANGE_HEAD, _range_rows(result)),
        f"<h2>{html.escape(_TUNING)}</h2>",
        _html_table(_TUNING_HEAD, _tuning_rows(result)),
    ]
    for key, plot in PLOTS.items():
        heading = plot.title
        data = base64.b64encode(figures[key]).decode("ascii")
        parts.append(f'<h2>{html.escape(heading)}</h2><img alt="{html.escape(heading)}" id="plot-{key}" '
                     f'src="data:image/png;base64,{data}">')  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts)


# --- Markdown --------------------------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_md_cell, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(result: ComparisonResult, image_names: dict[str, str]) -> str:
    """The report as Markdown; ``image_names`` maps each plot key to its PNG's path relative to the file."""
    parts = [
        f"# {_md_cell(_title(result))}",
        "",
        _md_cell(_intro(result)),
        "",
        "## Reading",
        "",
        _md_cell(reading(result)),
        "",
        "## Verdicts",
        "",
        _md_table(_VERDICT_HEAD, _verdict_rows(result)),
        "",
        "## Arms",
        "",
        _md_table(_arm_head(result), _arm_rows(result)),
        "",
        f"## {_SPENDING}",
        "",
        _md_table(_spending_head(result), _spending_rows(result)),
        "",
        f"## {_RANGES}",
        "",
        _md_table(_RANGE_HEAD, _range_rows(result)),
        "",
        f"## {_TUNING}",
        "",
        _md_table(_TUNING_HEAD, _tuning_rows(result)),
        "",
    ]
    for key, plot in PLOTS.items():
        parts += [f"## {plot.title}", "", f"![{plot.title}]({image_names[key]})", ""]
    return "\n".join(parts)


def write_markdown(result: ComparisonResult, out_dir: str | Path, name: str = "report.md") -> Path:
    """Write ``report.md`` and one PNG per plot into ``out_dir`` (created if missing); returns the Markdown's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = {}
    for key, png in render_figures(result).items():
        names[key] = f"{key}.png"
        (out / names[key]).write_bytes(png)
    path = out / name
    path.write_text(render_markdown(result, names), encoding="utf-8")
    return path
