"""Workload registries: datasets, models and tasks by name, from this package or from installed plugins.

A registry holds the built-ins (registered in code, as a user may with :func:`tvlars.register_dataset`) and the
entry points of one group (``tvlars.datasets``, ``tvlars.models``, ``tvlars.tasks``) of every installed
distribution. Entry points are discovered on first use and each is imported only when its name is first used or
the registry is listed; one that fails to import is kept as :class:`Broken` with its error, so a listing still works.
The options a workload takes, and their defaults, are the keyword parameters of its callable (``inspect.signature``).
An option annotated ``Annotated[int, Bounds(ge=1, le=1_000_000)]`` is also checked by value (a sequence option:
each element, and its length against ``max_length``), for built-ins and plugins alike.
"""

from __future__ import annotations

import inspect
import math
import numbers
import socket
import threading
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import MappingProxyType
from typing import Any

__all__ = [
    "BUILT_IN",
    "Bounds",
    "REQUIRED",
    "Broken",
    "Entry",
    "PluginError",
    "Registry",
    "WorkloadNotInstalledError",
]

#: The ``source`` of the workloads this package registers itself.
BUILT_IN = "built-in"
#: The default shown for an option the callable requires.
REQUIRED = "<required>"


@dataclass(frozen=True)
class Bounds:
    """Bounds on a number, declared in a callable's signature as ``Annotated[int, Bounds(ge=1)]``: a workload option
    (dataset loader, model builder) or an optimizer hyperparameter. ``ge``/``gt``/``le``/``lt`` bound a number (NaN and
    ±Infinity are refused), or each number of a sequence option, whose length ``max_length`` bounds. The API turns
    these into the same bounds on its request models. A marker of our own rather than pydantic's ``Field`` or
    ``annotated_types``: ``tvlars`` needs only torch and numpy.

    >>> Bounds(gt=0, lt=1).check("beta", 0.5)
    >>> Bounds(gt=0).describe()
    '> 0'
    >>> Bounds(ge=10, le=1_000_000).describe()
    '>= 10, <= 1000000'
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    max_length: int | None = None

    def check(self, name: str, value: Any) -> None:
        """``ValueError("Invalid {name}: {value} (a number ...)")`` if ``value`` (a number, or a sequence of numbers)
        is not finite or out of bounds; a value of another type is left to the callable's own checks."""
        if isinstance(value, list | tuple):
            if self.max_length is not None and len(value) > self.max_length:
                raise ValueError(f"Invalid {name}: {len(value)} items (at most {self.max_length})")
            for i, item in enumerate(value):
                self.check(f"{name}[{i}]", item)
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return
        ok = (
            math.isfinite(value)
            and (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )
        if not ok:
            raise ValueError(f"Invalid {name}: {value!r} (a number {self.describe()})")

    def describe(self) -> str:
        """The bounds as text: ``>= 0, <= 1``; ``finite`` with none."""
        pairs = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
        return ", ".join(f"{op} {_fmt(v)}" for op, v in pairs if v is not None) or "finite"


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e15 else f"{bound:g}"


def option_bounds(obj: Any) -> dict[str, Bounds]:
    """The :class:`Bounds` declared on ``obj``'s parameters (``Annotated[..., Bounds(...)]``), by parameter name."""
    try:
        hints = typing.get_type_hints(obj, include_extras=True)
    except Exception:  # an annotation that does not resolve (a plugin's forward reference): no declared bounds
        return {}
    found = {}
    for name, hint in hints.items():
        for meta in getattr(hint, "__metadata__", ()):
            if isinstance(meta, Bounds):
                found[name] = meta
    return found


class PluginError(ValueError):
    """A plugin that cannot be used: it failed to import, or its name clashes with another workload's."""


class WorkloadNotInstalledError(ValueError):
    """A workload name nothing on this host provides (a plugin installed where the API runs but not here)."""


@dataclass(frozen=True)
class Entry:
    """One registered workload: its callable, where it comes from, and the options it takes with their defaults."""

    kind: str
    name: str
    obj: Any
    source: str = BUILT_IN
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    description: str = ""
    bounds: Mapping[str, Bounds] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Broken:
    """A plugin entry point that cannot be used, and why."""

    kind: str
    name: str
    source: str
    error: str


@dataclass(frozen=True)
class _Plugin:
    name: str
    value: str
    source: str
    entry_point: metadata.EntryPoint


def _distribution(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.metadata['Name']} {dist.version}" if dist is not None else f"an unnamed distribution ({ep.value})"


def _owner(source: str) -> str:
    return "tvlars (built-in)" if source == BUILT_IN else source


def _first_line(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").strip().split("\n", 1)[0]


class Registry:
    """Workloads of one kind by name.

    Args:
        kind (str): what it holds, in messages (``"dataset"``).
        group (str): the entry-point group plugins register in (``"tvlars.datasets"``).
        leading (int): how many leading parameters of a callable are not options (``data_dir``: 1;
            ``input_shape, num_classes``: 2).
        options (callable, optional): reads an object's options itself (tasks); default: the callable's keyword
            parameters after ``leading``.
        describe (callable, optional): an object's one-line description; default: its docstring's first line.
    """

    def __init__(
        self,
        kind: str,
        group: str,
        *,
        leading: int = 0,
        options: Callable[[Any], Mapping[str, Any]] | None = None,
        describe: Callable[[Any], str] | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        self.leading = leading
        self._read_options = options or self._signature_options
        self._describe = describe or _first_line
        self._entries: dict[str, Entry] = {}
        self._plugins: dict[str, _Plugin] | None = None
        self._broken: dict[str, Broken] = {}
        self._lock = threading.RLock()

    # -- registration ------------------------------------------------------------------------------------------------

    def register(self, name: str, obj: Any, *, source: str | None = None) -> Entry:
        """Add ``obj`` under ``name``; a name already taken (built-in, plugin or code) is a :class:`PluginError`.

        ``source`` says where it comes from; by default ``"built-in"`` for this package's own objects, else the
        module that defines ``obj``.
        """
        if source is None:
            module = getattr(obj, "__module__", None) or "?"
            source = BUILT_IN if module.split(".")[0] == "tvlars" else f"{module} (registered in code)"
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError(f"Invalid {self.kind} name: {name!r} (a non-empty name without ':')")
        with self._lock:
            taken = self._entries.get(name)
            plugin = self._plugins.get(name) if self._plugins is not None else None  # before discovery: checked then
            if taken is not None or (plugin is not None and plugin.source != source):
                other = taken.source if taken is not None else plugin.source  # type: ignore[union-attr]
                raise PluginError(
                    f"{self.kind} {name!r} is registered twice: by {_owner(other)} and by {_owner(source)} "
                    "(uninstall one, or register under another name)"
                )
            options = MappingProxyType(self._read_options(obj))
            bounds = MappingProxyType({k: b for k, b in option_bounds(obj).items() if k in options})
            entry = Entry(self.kind, name, obj, source, options, self._describe(obj), bounds)
            self._entries[name] = entry
            return entry

    # -- lookup ------------------------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every name, built-in or plugin, sorted (nothing is imported)."""
        with self._lock:
            return sorted(set(self._entries) | set(self._discover()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def get(self, name: str) -> Entry:
        """The entry for ``name``, importing its plugin on first use.

        Raises:
            WorkloadNotInstalledError: nothing here provides ``name`` (the message names the host and the choices).
            PluginError: its plugin fails to import or clashes with another workload of that name.
        """
        with self._lock:
            plugin = self._discover().get(name)
            if name in self._broken:
                raise PluginError(self._broken[name].error)
            if name in self._entries:
                return self._entries[name]
            if plugin is None:
                raise WorkloadNotInstalledError(
                    f"{self.kind} {name!r} is not installed on host {socket.gethostname()} (installed: "
                    f"{', '.join(self.names()) or 'none'}; pip install the package that provides it, with an "
                    f"entry point in group {self.group!r}, on every host that trains: see docs/workloads.md)"
                )
            try:
                obj = plugin.entry_point.load()
                return self.register(name, obj, source=plugin.source)
            except Exception as e:  # a plugin's import may raise anything; keep it, with its distribution's name
                message = (
                    str(e)
                    if isinstance(e, PluginError)
                    else (
                        f"{self.kind} {name!r} from {plugin.source} ({plugin.value}) failed to load: "
                        f"{type(e).__name__}: {e}"
                    )
                )
                self._broken[name] = Broken(self.kind, name, plugin.source, message)
                raise PluginError(message) from e

    def entries(self) -> tuple[list[Entry], list[Broken]]:
        """Every usable entry and every broken plugin, by name (imports every plugin not yet imported)."""
        good = []
        for name in self.names():
            try:
                good.append(self.get(name))
            except PluginError:
                pass
        with self._lock:
            return good, sorted(self._broken.values(), key=lambda b: b.name)

    def loaded(self) -> list[Entry]:
        """The entries registered or imported so far (imports nothing)."""
        with self._lock:
            return [self._entries[name] for name in sorted(self._entries)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    # -- options -----------------------------------------------------------------------------------------------------

    def check_options(self, name: str, options: Mapping[str, Any]) -> None:
        """``ValueError`` naming every option ``name`` does not take (and the ones it does), a required option
        missing, or a value outside the bounds its signature declares."""
        entry = self.get(name)
        accepted = entry.options
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            listed = ", ".join(f"{k}={v!r}" for k, v in accepted.items()) or "none"
            raise ValueError(f"Unknown option(s) for {self.kind} {name!r}: {', '.join(unknown)} (accepted: {listed})")
        missing = sorted(k for k, v in accepted.items() if v == REQUIRED and k not in options)
        if missing:
            raise ValueError(f"{self.kind} {name!r} needs option(s): {', '.join(missing)}")
        for key, value in options.items():
            if key in entry.bounds:
                try:
                    entry.bounds[key].check(key, value)
                except ValueError as e:
                    raise ValueError(f"{self.kind} {name!r}: {e}") from None

    def _signature_options(self, obj: Any) -> dict[str, Any]:
        if not callable(obj):
            raise TypeError(f"Invalid {self.kind}: {obj!r} is not callable")
        parameters = list(inspect.signature(obj).parameters.values())[self.leading :]
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return {
            p.name: REQUIRED if p.default is inspect.Parameter.empty else p.default
            for p in parameters
            if p.kind in kinds
        }

    # -- plugins -----------------------------------------------------------------------------------------------------

    def _discover(self) -> dict[str, _Plugin]:
        """The group's entry points by name, read once; a name two distributions claim is kept as broken."""
        if self._plugins is not None:
            return self._plugins
        found: dict[str, list[_Plugin]] = {}
        for ep in metadata.entry_points(group=self.group):
            plugin = _Plugin(ep.name, ep.value, _distribution(ep), ep)
            claims = found.setdefault(ep.name, [])
            if all((c.source, c.value) != (plugin.source, plugin.value) for c in claims):  # same dist seen twice
                claims.append(plugin)
        self._plugins = {}
        for name, claims in sorted(found.items()):
            self._plugins[name] = claims[0]
            sources = sorted({c.source for c in claims})
            if len(claims) > 1:
                self._broken[name] = Broken(
                    self.kind,
                    name,
                    " and ".join(sources),
                    f"{self.kind} {name!r} is provided by both {' and '.join(sources)}: uninstall one",
                )
            elif name in self._entries:
                other = self._entries[name].source
                self._broken[name] = Broken(
                    self.kind,
                    name,
                    claims[0].source,
                    f"{self.kind} {name!r} is registered twice: by {_owner(other)} and by {claims[0].source} "
                    "(uninstall the plugin, or rename its entry point)",
                )
        return self._plugins

    def forget_plugins(self) -> None:
        """Read the entry points again on next use (after installing or removing a distribution in this process)."""
        with self._lock:
            for name in list(self._entries):
                if self._entries[name].source != BUILT_IN:
                    del self._entries[name]
            self._plugins = None
            self._broken.clear()
