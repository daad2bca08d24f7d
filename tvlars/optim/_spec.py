"""One declaration per optimizer: :class:`OptimizerSpec`, and the registry of them (``tvlars.optimizers``).

An optimizer is declared once: its factory, each hyperparameter (trial key, constructor argument, type and bounds,
default, conversion, default comparison range), its LR scaling rule and schedule recipe, its reference
configurations per batch size and the optimizers its space contains. The trainer (``tvlars.train``), the study and
comparison specs (``search_spaces``), ``GET /v1/workloads`` and the comparison report all read the declaration; none
of them names an optimizer. Built-ins register through :func:`register_optimizer` like anyone else; an installed
distribution registers with an entry point in group ``tvlars.optimizers`` whose value is an :class:`OptimizerSpec`
(``docs/optimizers.md``).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any

import torch

from ..registry import BUILT_IN, Bounds, Entry, Registry
from ..schedules import paper_lr

__all__ = [
    "LOW",
    "LR_SCALINGS",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "Hyperparameter",
    "OptimizerSpec",
    "SearchRange",
    "Training",
    "geometric_mean",
    "get_optimizer",
    "interpolate",
    "register_optimizer",
    "round_sig",
]

#: LR scaling rules: ``none`` (the LR as given) or ``linear_256`` (``lr · batch_size / 256``, Goyal et al.).
LR_SCALINGS = ("none", "linear_256")
#: LR schedules the trainer wraps around an optimizer.
LR_SCHEDULES = ("constant", "warmup_cosine")
#: In :attr:`OptimizerSpec.contains`: the bottom of the key's searched range.
LOW = "low"


@dataclass(frozen=True)
class Training:
    """What a conversion may depend on: the trial's batch size, length and LR scaling rule."""

    batch_size: int
    epochs: int
    steps_per_epoch: int
    lr_scaling: str = "none"

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def lr(self, lr: float) -> float:
        """The LR the optimizer steps with for a trial's ``lr``: ``lr · batch_size / 256`` under ``linear_256``."""
        return paper_lr(lr, self.batch_size) if self.lr_scaling == "linear_256" else lr


@dataclass(frozen=True)
class SearchRange:
    """A hyperparameter's default search range in comparisons: ``[low, high]``, log-scaled or linear."""

    low: float
    high: float
    log: bool = False


#: ``convert(value, values, training)``: the constructor argument from the trial key's value (``values``: every key
#: of this optimizer, given or default).
Convert = Callable[[Any, Mapping[str, Any], Training], Any]


@dataclass(frozen=True)
class Hyperparameter:
    """One trial key of an optimizer.

    Args:
        key (str): the trial config key (``lam_steps``).
        type (type): its type, bounds as ``Annotated[float, Bounds(ge=0)]``; ``float | None`` allows None.
        default: the value a trial without the key trains with.
        argument (str, optional): the constructor argument it sets (default: ``key``).
        convert (callable, optional): ``(value, values, training) -> argument value`` (``lam_steps → lam``:
            ``value / training.total_steps``); default: the value as it is.
        instead_of (str, optional): another key of the same argument this one replaces when given (``lam_steps``
            instead of ``lam``): giving both is an error; without it, a default of None means "not given".
        search (SearchRange, optional): its default search range in comparisons (default: not searched).
        help (str): one line for listings.
    """

    key: str
    type: Any
    default: Any
    argument: str | None = None
    convert: Convert | None = None
    instead_of: str | None = None
    search: SearchRange | None = None
    help: str = ""

    @property
    def target(self) -> str:
        """The constructor argument it sets."""
        return self.argument or self.key

    @property
    def bounds(self) -> Bounds | None:
        return next((m for m in getattr(self.type, "__metadata__", ()) if isinstance(m, Bounds)), None)

    def check(self, value: Any) -> str | None:
        """Why ``value`` is invalid for this key, or None."""
        kinds = _kinds(self.type)
        if value is None:
            return None if type(None) in kinds else "not null"
        if isinstance(value, bool):
            return None if bool in kinds else f"a {_kind_names(kinds)}"
        if isinstance(value, int | float) and (float in kinds or (int in kinds and isinstance(value, int))):
            bounds = self.bounds or Bounds()
            try:
                bounds.check(self.key, value)
            except ValueError:
                return f"a number {bounds.describe()}"
            return None
        if not any(isinstance(value, k) for k in kinds if k is not type(None)):
            return f"a {_kind_names(kinds)}"
        return None


def _kinds(tp: Any) -> tuple[type, ...]:
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return tuple(a for arg in typing.get_args(tp) for a in _kinds(arg))
    return (tp,)


def _kind_names(kinds: tuple[type, ...]) -> str:
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


#: ``step_factor(steps, arguments)``: the optimizer's own multiplier on its step at 1-based ``steps`` (TVLARS: φ).
StepFactor = Callable[[Any, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer, declared once.

    Args:
        factory (callable): ``factory(params, **arguments) -> torch.optim.Optimizer``.
        hyperparameters (sequence of Hyperparameter): every trial key it takes, ``lr`` first.
        description (str): one line.
        lr_scaling (str): ``none`` or ``linear_256``: how the trial's ``lr`` becomes the optimizer's (default: none).
        warmup_fraction (float): warm-up epochs when a trial gives none, as a share of its epochs (default: 0).
        lr_schedule (str): ``constant`` or ``warmup_cosine`` (linear warm-up, then cosine to 0.001x).
        references (mapping): ``{batch_size: {key: grid}}``: the published sweep at each batch size; its geometric
            mean is the reference configuration there (interpolated log–log between batch sizes).
        official (mapping): the fixed values of its official configuration (a comparison arm's defaults).
        derived_references (callable, optional): ``batch_size -> more reference keys`` (TVLARS: ``lam_steps``
            from the paper's ``lam`` and its steps at that batch size).
        contains (mapping): ``{other optimizer: {key: LOW or a value}}``: the point of this optimizer's space
            (from its reference configuration) where it trains as the other one (TVLARS at λ → 0 is LARS): a
            comparison enqueues it, and this optimizer tuned clearly below that one is a failed search.
        step_factor (callable, optional): the optimizer's own multiplier on its step, for the report's schedule plot.
        layerwise (bool): takes ``exclude_1d`` and the ``adapt`` group option (default: False).
    """

    factory: Callable[..., torch.optim.Optimizer]
    hyperparameters: Sequence[Hyperparameter]
    description: str = ""
    lr_scaling: str = "none"
    warmup_fraction: float = 0.0
    lr_schedule: str = "constant"
    references: Mapping[int, Mapping[str, Sequence[float]]] = field(default_factory=lambda: MappingProxyType({}))
    official: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    derived_references: Callable[[int], Mapping[str, Any]] | None = None
    contains: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    step_factor: StepFactor | None = None
    layerwise: bool = False
    has_momentum: bool = False
    has_betas: bool = False

    def __post_init__(self) -> None:
        if not callable(self.factory):
            raise TypeError(f"Invalid factory: {self.factory!r} (a callable params, **arguments -> Optimizer)")
        keys = [h.key for h in self.hyperparameters]
        if len(set(keys)) != len(keys) or "lr" not in keys:
            raise ValueError(f"Invalid hyperparameters: {keys} (distinct trial keys, lr among them)")
        if self.lr_scaling not in LR_SCALINGS:
            raise ValueError(f"Invalid lr_scaling: {self.lr_scaling!r} (choose from {', '.join(LR_SCALINGS)})")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"Invalid lr_schedule: {self.lr_schedule!r} (choose from {', '.join(LR_SCHEDULES)})")
        if not 0 <= self.warmup_fraction <= 1:
            raise ValueError(f"Invalid warmup_fraction: {self.warmup_fraction}")
        for h in self.hyperparameters:
            if h.instead_of is not None and h.instead_of not in keys:
                raise ValueError(f"Invalid instead_of of {h.key}: {h.instead_of!r} is not one of its keys")

    # -- trial keys --------------------------------------------------------------------------------------------------

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(h.key for h in self.hyperparameters)

    @property
    def defaults(self) -> dict[str, Any]:
        """Every trial key with the value a trial without it trains with."""
        return {h.key: h.default for h in self.hyperparameters}

    def hyperparameter(self, key: str) -> Hyperparameter:
        return next(h for h in self.hyperparameters if h.key == key)

    def check(self, given: Mapping[str, Any]) -> None:
        """``ValueError`` for the first given value of a wrong type, out of bounds, or given with its alternative."""
        for h in self.hyperparameters:
            if h.key not in given:
                continue
            why = h.check(given[h.key])
            if why is not None:
                raise ValueError(f"Invalid {h.key}: {given[h.key]!r} ({why})")
            if h.instead_of is not None and given[h.key] is not None and h.instead_of in given:
                raise ValueError(
                    f"Give {h.key} or {h.instead_of}, not both ({h.key} is {h.instead_of} in units of training)"
                )

    def arguments(self, given: Mapping[str, Any], training: Training) -> dict[str, Any]:
        """The constructor arguments for a trial's values of this optimizer's keys (defaults for the rest)."""
        values = {**self.defaults, **given}
        out: dict[str, Any] = {}
        for h in self.hyperparameters:
            value = values[h.key]
            if h.instead_of is not None and value is None:
                continue  # the alternative form, not given
            out[h.target] = h.convert(value, values, training) if h.convert is not None else value
        out["lr"] = training.lr(out["lr"])  # the LR scaling rule: the one conversion every optimizer shares
        return out

    # -- comparisons -------------------------------------------------------------------------------------------------

    def search_space(self) -> dict[str, SearchRange]:
        """The default comparison ranges of the keys it searches besides ``lr``."""
        return {h.key: h.search for h in self.hyperparameters if h.search is not None and h.key != "lr"}

    def reference(self, batch_size: int) -> dict[str, Any]:
        """Its reference configuration at ``batch_size``: each reference grid's geometric mean, interpolated
        log–log between the published batch sizes and held constant beyond them; empty without references."""
        if not self.references:
            return {}
        keys = sorted({k for grids in self.references.values() for k in grids})
        point: dict[str, Any] = {
            key: interpolate(
                {bs: geometric_mean(grids[key]) for bs, grids in self.references.items() if key in grids}, batch_size
            )
            for key in keys
        }
        if self.derived_references is not None:
            point.update(self.derived_references(batch_size))
        return point

    # -- schedules ---------------------------------------------------------------------------------------------------

    def training(self, batch_size: int, epochs: int, steps_per_epoch: int, lr_scaling: str | None = None) -> Training:
        """A trial's :class:`Training` under ``lr_scaling`` (None: this optimizer's rule)."""
        return Training(batch_size, epochs, steps_per_epoch, lr_scaling or self.lr_scaling)

    def warmup_epochs(self, given: float | None, epochs: int) -> float:
        """A trial's warm-up in epochs: as given, else this recipe's share of the epochs."""
        return given if given is not None else round(self.warmup_fraction * epochs)

    def schedule(self, given: str | None, warmup_epochs: float) -> str:
        """A trial's LR schedule: as given, else this recipe's, or warm-up → cosine when it warms up."""
        if given is not None:
            return given
        return "warmup_cosine" if self.lr_schedule == "warmup_cosine" or warmup_epochs > 0 else "constant"


def geometric_mean(values: Sequence[float]) -> float:
    return round_sig(math.exp(sum(math.log(x) for x in values) / len(values)))


def interpolate(table: Mapping[int, float], batch_size: int) -> float:
    """Linear in log value against log batch size between the table's points; constant beyond its ends."""
    points = sorted(table.items())
    if batch_size <= points[0][0]:
        return points[0][1]
    if batch_size >= points[-1][0]:
        return points[-1][1]
    for (b0, c0), (b1, c1) in zip(points, points[1:], strict=False):
        if b0 <= batch_size <= b1:
            t = (math.log(batch_size) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return round_sig(math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0))))
    raise AssertionError("unreachable: batch_size lies within the table")


def round_sig(x: float) -> float:
    """``x`` to 6 significant digits (what specs store)."""
    return float(f"{x:.6g}")


def _options(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, OptimizerSpec):
        raise TypeError(f"Invalid optimizer: {spec!r} is not a tvlars.optim.OptimizerSpec")
    return spec.defaults


#: Optimizers by name: the built-ins and the ``tvlars.optimizers`` entry points of installed distributions.
OPTIMIZERS = Registry(
    "optimizer", "tvlars.optimizers", options=_options, describe=lambda spec: getattr(spec, "description", "")
)


def register_optimizer(name: str, spec: OptimizerSpec) -> Entry:
    """Add an optimizer under ``name`` (as a plugin's entry point does); a taken name is a ``PluginError``.

    ``register_optimizer("rmsprop", OptimizerSpec(torch.optim.RMSprop, [Hyperparameter("lr", float, 0.01)]))``
    """
    if not isinstance(spec, OptimizerSpec):
        raise TypeError(f"Invalid optimizer {name!r}: {spec!r} is not a tvlars.optim.OptimizerSpec")
    module = getattr(spec.factory, "__module__", None) or "?"
    source = BUILT_IN if module.split(".")[0] == "tvlars" else f"{module} (registered in code)"
    return OPTIMIZERS.register(name, spec, source=source)


def get_optimizer(name: str) -> OptimizerSpec:
    """The declaration registered as ``name``: ``ValueError`` naming the choices if none, ``PluginError`` if broken."""
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer: {name!r} (choose from {', '.join(OPTIMIZERS.names())})")
    return OPTIMIZERS.get(name).obj
