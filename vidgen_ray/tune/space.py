"""Search-space entries: ``{loguniform: [1e-5, 1e-3]}`` and friends, parsed once into ``Param``.

    python -c "from vidgen_ray.tune.space import parse_param; print(parse_param('train.optim.lr', {'loguniform': [1e-5, 1e-3]}))"

A sweep file's ``space`` maps a dotted experiment key to exactly one distribution:

    {loguniform: [low, high]}    float, sampled on a log scale (learning rates, weight decay); low > 0
    {uniform: [low, high]}       float, sampled uniformly (dropout, betas)
    {int: [low, high]}           integer in [low, high], both inclusive; {int: [low, high, step]} steps
    {choice: [a, b, ...]}        categorical: numbers, strings, booleans or lists (e.g. channel widths)

Optuna's categorical distribution holds only plain scalars, so a choice among lists is offered to
the searcher as text labels (``"64,32,16"``) and decoded back to the list for the experiment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from vidgen_ray.configs import ConfigError, suggest

Kind = Literal["loguniform", "uniform", "int", "choice"]
KINDS: tuple[str, ...] = ("loguniform", "uniform", "int", "choice")
_SCALARS = (str, int, float, bool, type(None))


class SweepError(ConfigError):
    """A sweep file is wrong; the message names the entry and the fix."""


@dataclass(frozen=True)
class Param:
    key: str  # dotted experiment key, e.g. "train.optim.lr" or "model.preset"
    kind: Kind
    low: float = 0.0
    high: float = 0.0
    step: int = 1
    options: tuple[Any, ...] = ()

    # --- what the searcher sees ------------------------------------------------------------------
    def distribution(self):
        import optuna.distributions as od

        if self.kind == "loguniform":
            return od.FloatDistribution(self.low, self.high, log=True)
        if self.kind == "uniform":
            return od.FloatDistribution(self.low, self.high)
        if self.kind == "int":
            return od.IntDistribution(int(self.low), int(self.high), step=self.step)
        return od.CategoricalDistribution(self.labels)

    @property
    def labels(self) -> tuple[Any, ...]:
        """The choice options as the searcher stores them (plain scalars)."""
        return tuple(_label(o) for o in self.options)

    # --- searcher value <-> experiment value -----------------------------------------------------
    def decode(self, value: Any) -> Any:
        if self.kind != "choice":
            return value
        for option, label in zip(self.options, self.labels):
            if _same(label, value):
                return option
        raise SweepError(f"{self.key}: {value!r} is not one of the choices {list(self.options)}")

    def encode(self, value: Any, where: str) -> Any:
        """A user-written value (``points_to_evaluate``) as the searcher stores it, checked to lie in
        the space (a point outside it would silently widen the search)."""
        if self.kind == "choice":
            for option in self.options:
                if _same(option, value):
                    return _label(option)
            raise SweepError(f"{where}: {self.key}={value!r} is not one of the choices {list(self.options)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SweepError(f"{where}: {self.key}={value!r} must be a number in [{self.low}, {self.high}]")
        if not self.low <= value <= self.high:
            raise SweepError(f"{where}: {self.key}={value!r} is outside [{self.low}, {self.high}]; widen the range or change the point")
        return int(value) if self.kind == "int" else float(value)

    def probe_values(self) -> list[Any]:
        """Values that must all build a valid experiment: both ends of a range, every choice."""
        if self.kind == "choice":
            return list(self.options)
        if self.kind == "int":
            last = int(self.low) + (int(self.high) - int(self.low)) // self.step * self.step
            return [int(self.low), last]
        return [self.low, self.high]

    def upper(self) -> Any:
        """The largest value the space can take (for budgets derived from ``train.max_steps``)."""
        return max(self.options) if self.kind == "choice" else self.probe_values()[-1]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key}: choice {list(self.options)}"
        step = f" step {self.step}" if self.kind == "int" and self.step != 1 else ""
        return f"{self.key}: {self.kind} [{self.low:g}, {self.high:g}]{step}"


def _label(option: Any) -> Any:
    if isinstance(option, (list, tuple)):
        return ",".join(str(v) for v in option)
    return option


def _same(option: Any, value: Any) -> bool:
    if isinstance(option, tuple):
        return isinstance(value, (list, tuple)) and list(option) == list(value)
    if isinstance(option, bool) or isinstance(value, bool):
        return option is value  # True == 1 in Python, but not as a config value
    return option == value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SweepError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)  # YAML reads 1e-5 (no dot) as a string
    except ValueError:
        raise SweepError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SweepError(f"{where}: expected a finite number, got {value!r}")
    return number


def parse_param(key: str, spec: Any) -> Param:
    """One ``space`` entry -> ``Param``, or a ``SweepError`` that shows the expected form."""
    where = f"space.{key}"
    example = f"{{loguniform: [1e-5, 1e-3]}}, {{uniform: [0.0, 0.3]}}, {{int: [4, 12]}} or {{choice: [8, 16]}}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise SweepError(f"{where}: expected one distribution such as {example}; got {spec!r} "
                         f"(to fix a value for every trial, put it under `fixed:` instead)")
    (kind, args), = spec.items()
    if kind not in KINDS:
        raise SweepError(f"{where}: unknown distribution {kind!r}{suggest(str(kind), KINDS)}; use one of {', '.join(KINDS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise SweepError(f"{where}: choice needs a non-empty list of options, e.g. {{choice: [8, 16, 32]}}")
        for option in args:
            ok = isinstance(option, _SCALARS) or (isinstance(option, list) and all(isinstance(v, _SCALARS) for v in option))
            if not ok:
                raise SweepError(f"{where}: choice option {option!r} must be a number, string, boolean or a list of those")
        labels = [_label(o) for o in args]
        if len(set(map(repr, labels))) != len(labels):
            raise SweepError(f"{where}: choice options {args!r} repeat a value; list each option once")
        return Param(key, "choice", options=tuple(tuple(o) if isinstance(o, list) else o for o in args))
    if not isinstance(args, list) or len(args) not in ((2, 3) if kind == "int" else (2,)):
        form = "[low, high] or [low, high, step]" if kind == "int" else "[low, high]"
        raise SweepError(f"{where}: {kind} takes {form}, got {args!r}")
    low, high = _number(args[0], f"{where}.{kind}[0]"), _number(args[1], f"{where}.{kind}[1]")
    if not low < high:
        raise SweepError(f"{where}: {kind} needs low < high, got [{args[0]}, {args[1]}] "
                         f"(for a single value put {key} under `fixed:`)")
    if kind == "loguniform" and low <= 0:
        raise SweepError(f"{where}: loguniform needs low > 0 (log scale), got {args[0]}; use uniform for ranges that include 0")
    if kind == "int":
        step = _number(args[2], f"{where}.int[2]") if len(args) == 3 else 1
        if not (low.is_integer() and high.is_integer() and float(step).is_integer() and step >= 1):
            raise SweepError(f"{where}: int takes whole numbers and a step >= 1, got {args!r}; use uniform for fractions")
        return Param(key, "int", low, high, step=int(step))
    return Param(key, kind, low, high)  # type: ignore[arg-type]
