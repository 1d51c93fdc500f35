"""A sweep definition (``tuning/*.yaml``): typed, loaded from YAML, checked before any trial starts.

    python jobs/tune.py tuning/demo_sweep.yaml --data ./outputs/synth --dry-run

Schema (every key but ``name``, ``base`` and ``space`` has a default):

    name: dit-b-lr                      # the experiment folder under storage_path; rerun = resume
    base: dit-b                         # a model preset, or a path to an experiment YAML
    storage_path: s3://bucket/sweeps    # local folder or s3:// / gs:// / abfs:// prefix
    fixed:                              # dotted overrides applied to every trial (nested maps work too)
      data.source: s3://bucket/videos
      train.max_steps: 2000             # the budget of one trial
      train.val_every: 200              # one report to Tune (one ASHA "iteration") per validation
    space:                              # dotted key -> one distribution (vidgen_ray/tune/space.py)
      train.optim.lr: {loguniform: [1.0e-5, 1.0e-3]}
      model.preset: {choice: [gan-debug, dit-debug]}   # the family itself can be searched
    metric: val_loss                    # what the searcher, ASHA and best.yaml optimise
    mode: min
    secondary: [{metric: samples_per_s, mode: max}]    # optional: multi-objective (Pareto) search
    num_trials: 32
    max_concurrent: 4                   # trials (= Train runs) in flight at once
    seed: 0                             # TPE sampler seed
    points_to_evaluate: []              # known configurations tried first ({key: value} per point)
    resources: {workers: 4, cpus_per_worker: 8, gpus_per_worker: 1}   # per trial
    scheduler: {kind: asha, grace_period: 1, reduction_factor: 3, max_t: 0}
    budget: {time_budget_s: 0}

Multi-objective: Optuna's TPE searches the Pareto front of ``metric`` and ``secondary``. ASHA
compares trials on one number, so it stops trials on ``metric`` alone (a trial that is fast but
bad is still stopped); ``best.yaml`` is the best trial on ``metric``, which is always on the front,
and the results table marks every Pareto-optimal trial.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vidgen_ray.configs import ConfigError, from_dict, load_yaml, parse_set_args, validate_all
from vidgen_ray.runtime import get_logger
from vidgen_ray.tune.space import Param, SweepError, parse_param

log = get_logger("tune.sweep")

# Metrics the train loop reports (vidgen_ray/train/loop.py, validate.py, telemetry.py); per-part
# losses (loss_generator, val_loss_discriminator, grad_norm_...) follow the prefixes below.
KNOWN_METRICS = (
    "loss", "val_loss", "val_psnr", "val_ssim", "samples_per_s", "tokens_per_s", "data_wait_fraction",
    "step_time_s", "mfu", "gpu_memory_gb", "step", "epoch", "items_consumed",
)
METRIC_PREFIXES = ("loss_", "val_loss_", "grad_norm_")
# Keys `resources` writes; the rest of the experiment comes from `base`, `fixed` and `space`.
RESOURCE_KEYS = {"workers": "parallel.num_workers", "cpus_per_worker": "parallel.cpus_per_worker",
                 "gpus_per_worker": "parallel.use_gpu"}


@dataclass
class Objective:
    metric: str = ""
    mode: Literal["min", "max"] = "min"


@dataclass
class TrialResources:
    """What one trial asks for. Unset worker fields keep the base experiment's ``parallel`` values."""

    workers: int | None = None  # Train workers per trial (parallel.num_workers)
    cpus_per_worker: float | None = None  # parallel.cpus_per_worker
    gpus_per_worker: int | None = None  # 0 or 1 (parallel.use_gpu: the trainer places one GPU per worker)
    # The trial process itself only launches and watches its Train run: a sliver of a CPU, so that
    # trials in flight never take the CPUs their own workers and decode tasks need.
    driver_cpus: float = 0.01
    driver_resource: str | None = None  # custom node resource for trial drivers, e.g. a non-spot node

    def validate(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError("resources.workers must be >= 1")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise ValueError("resources.cpus_per_worker must be > 0")
        if self.gpus_per_worker not in (None, 0, 1):
            raise ValueError(f"resources.gpus_per_worker is {self.gpus_per_worker}; the trainer runs one process per "
                             f"GPU, so use 0 or 1 and raise resources.workers for more GPUs per trial")
        if self.driver_cpus <= 0:
            raise ValueError("resources.driver_cpus must be > 0 (Tune needs a non-empty request; 0.01 is plenty)")

    def overrides(self) -> dict[str, Any]:
        values = {"workers": self.workers, "cpus_per_worker": self.cpus_per_worker,
                  "gpus_per_worker": None if self.gpus_per_worker is None else bool(self.gpus_per_worker)}
        return {RESOURCE_KEYS[k]: v for k, v in values.items() if v is not None}

    def driver_request(self) -> dict[str, float]:
        request = {"CPU": self.driver_cpus}
        if self.driver_resource:
            request[self.driver_resource] = 0.01
        return request


@dataclass
class SchedulerConfig:
    kind: Literal["asha", "none"] = "asha"
    grace_period: int = 1  # reports every trial gets before ASHA may stop it
    reduction_factor: int = 3  # at each rung only the best 1/reduction_factor go on
    max_t: int = 0  # reports in a full trial; 0 = derived from train.max_steps and the report steps

    def validate(self) -> None:
        if self.grace_period < 1:
            raise ValueError("scheduler.grace_period must be >= 1 report")
        if self.reduction_factor < 2:
            raise ValueError("scheduler.reduction_factor must be >= 2")
        if self.max_t < 0:
            raise ValueError("scheduler.max_t must be >= 0 (0 = derived from train.max_steps / train.val_every)")


@dataclass
class BudgetConfig:
    # 0 = none. When reached, running trials stop and the sweep ends (it is not resumed: that is the
    # budget). An *interrupted* sweep (Ctrl-C, `ray job stop`, a lost driver) resumes on rerun.
    time_budget_s: float = 0.0

    def validate(self) -> None:
        if self.time_budget_s < 0:
            raise ValueError("budget.time_budget_s must be >= 0 (0 = no limit)")


@dataclass
class SweepConfig:
    name: str = ""
    base: str = ""
    storage_path: str = "./outputs/sweeps"
    fixed: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    secondary: list[Objective] = field(default_factory=list)
    num_trials: int = 8
    max_concurrent: int = 2
    seed: int = 0
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)
    resources: TrialResources = field(default_factory=TrialResources)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)

    # --- derived views ---------------------------------------------------------------------------
    @property
    def params(self) -> list[Param]:
        return [parse_param(k, v) for k, v in self.space.items()]

    @property
    def objectives(self) -> list[Objective]:
        return [Objective(self.metric, self.mode), *self.secondary]

    def overrides(self) -> dict[str, Any]:
        """Dotted overrides every trial gets: resources, then ``fixed`` (so ``fixed`` / ``--set`` win)."""
        return {**self.resources.overrides(), **flatten(self.fixed)}

    def encoded_points(self) -> list[dict[str, Any]]:
        params = {p.key: p for p in self.params}
        out = []
        for i, point in enumerate(self.points_to_evaluate):
            where = f"points_to_evaluate[{i}]"
            point = flatten(point)
            unknown = [k for k in point if k not in params]
            if unknown:
                raise SweepError(f"{where}: {unknown[0]!r} is not a space key{suggest_key(unknown[0], params)}")
            missing = [k for k in params if k not in point]
            if missing:
                raise SweepError(f"{where} lacks {missing}: give every space key a value in each point")
            out.append({k: params[k].encode(v, where) for k, v in point.items()})
        return out

    # --- structural checks (the experiment-level ones live in trial.TrialTemplate) ----------------
    def validate(self) -> None:
        if not self.name or "/" in self.name:
            raise SweepError(f"name {self.name!r} must be non-empty and contain no '/' (it names the sweep's folder)")
        if not self.base:
            raise SweepError("base is empty: name a model preset (e.g. base: dit-b) or an experiment YAML file")
        if not self.space:
            raise SweepError("space is empty: add at least one entry, e.g. space: {train.optim.lr: {loguniform: [1.0e-5, 1.0e-3]}}")
        if self.num_trials < 1 or self.max_concurrent < 1:
            raise SweepError("num_trials and max_concurrent must be >= 1")
        params = self.params  # parses (and so checks) every distribution
        fixed = flatten(self.fixed)
        both = sorted(set(fixed) & {p.key for p in params})
        if both:
            raise SweepError(f"{both[0]!r} is both under fixed: and under space:; keep it in one place")
        for obj in self.objectives:
            check_metric(obj.metric)
        names = [o.metric for o in self.objectives]
        if len(set(names)) != len(names):
            raise SweepError(f"secondary repeats a metric ({names}); each objective must be a different metric")
        self.encoded_points()


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{train: {optim: {lr: 1}}}`` and ``{train.optim.lr: 1}`` both -> ``{"train.optim.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def suggest_key(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_metric(metric: str) -> None:
    if not metric:
        raise SweepError("metric is empty: name a reported metric, e.g. metric: val_loss")
    if metric in KNOWN_METRICS or metric.startswith(METRIC_PREFIXES):
        return
    close = difflib.get_close_matches(metric, KNOWN_METRICS, n=1, cutoff=0.75)
    if close:
        raise SweepError(f"metric {metric!r} is not reported by the train loop (did you mean {close[0]!r}?)")
    # A family may add its own metrics (LossOutput.metrics): allowed, but say so in the log.
    log.warning("metric %r is not one of the loop's standard metrics %s; every report must carry it", metric, KNOWN_METRICS)


def resolve_base(base: str, sweep_file: str | None) -> str:
    """A preset name stays as it is; a relative file path is taken from the working directory, or
    else next to the sweep file. Absolute, because trials run in their own working directories."""
    from vidgen_ray.models.registry import PRESETS

    if base in PRESETS or "://" in base:
        return base
    candidates = [Path(base)] + ([Path(sweep_file).parent / base] if sweep_file and "://" not in sweep_file else [])
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    if base.endswith((".yaml", ".yml")):
        raise SweepError(f"base: the experiment file {base!r} does not exist (looked in {[str(c) for c in candidates]})")
    raise SweepError(f"base: {base!r} is neither a model preset{suggest_key(base, PRESETS)} nor an experiment YAML file; "
                     f"presets: {', '.join(PRESETS)}")


def sweep_from_dict(data: dict[str, Any], sweep_file: str | None = None) -> SweepConfig:
    try:
        sweep = from_dict(SweepConfig, dict(data))
        validate_all(sweep)
    except SweepError:
        raise
    except ConfigError as exc:
        raise SweepError(f"{sweep_file or 'sweep'}: {exc}") from exc
    sweep.base = resolve_base(sweep.base, sweep_file)
    return sweep


def load_sweep(path: str) -> SweepConfig:
    """Read and check ``tuning/<name>.yaml``; errors name the entry and the fix."""
    from vidgen_ray import storage

    if "://" not in path and not os.path.exists(path):
        here = sorted(str(p) for p in Path("tuning").glob("*.yaml")) if Path("tuning").is_dir() else []
        raise SweepError(f"sweep file {path!r} does not exist{suggest_key(path, here)}")
    if not storage.exists(path):
        raise SweepError(f"sweep file {path!r} does not exist")
    return sweep_from_dict(load_yaml(path), path)


def with_cli(sweep: SweepConfig, data: str | None = None, storage: str | None = None, sets: list[str] | tuple[str, ...] = (),
             trials: int | None = None, name: str | None = None) -> SweepConfig:
    """The command line on top of a sweep file: ``--data`` sets data.source for every trial,
    ``--storage`` the sweep's storage_path, ``--set key=value`` adds a fixed override (a key that is
    in the space is pinned: it leaves the search), ``--trials`` the number of trials, ``--name``
    the sweep's name."""
    fixed = flatten(sweep.fixed)
    space = dict(sweep.space)
    if data is not None:
        fixed["data.source"] = data
    for key, value in parse_set_args(sets):
        if key in space:
            log.info("--set %s=%r pins a searched key: it leaves the search space", key, value)
            del space[key]
        fixed[key] = value
    points = [{k: v for k, v in flatten(p).items() if k in space} for p in sweep.points_to_evaluate]
    out = dataclasses.replace(
        sweep, fixed=fixed, space=space, points_to_evaluate=points,
        storage_path=storage if storage is not None else sweep.storage_path,
        num_trials=trials if trials is not None else sweep.num_trials,
        name=name if name is not None else sweep.name,
    )
    validate_all(out)
    return out
