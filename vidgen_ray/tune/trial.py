"""One trial: sampled values -> an experiment config -> the real Train run, its reports sent to Tune.

A Tune trial here is only the *driver* of a Ray Train run (the Train V2 pattern): it builds the
same ``TorchTrainer`` that ``jobs/train.py`` builds and calls ``fit()``; ``TuneReportCallback``
forwards every ``ray.train.report`` (one per validation / checkpoint, see train/loop.py) to Tune,
so each report is one Tune iteration, the unit ASHA counts in.

Every trial's experiment is ``load_experiment(base, sets=overrides + sampled)``: a sampled
``model.preset`` switches the family first, then the other keys apply, exactly as ``--set`` does.
Each trial's Train run is named after its trial id under ``<sweep>/trials/``, so checkpoints never
collide and a trial restarted after an interruption resumes its own run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from vidgen_ray import storage
from vidgen_ray.config import ExperimentConfig, load_experiment
from vidgen_ray.configs import ConfigError
from vidgen_ray.runtime import get_logger
from vidgen_ray.tune.space import Param, SweepError
from vidgen_ray.tune.sweep import SweepConfig

log = get_logger("tune.trial")

# Experiment fields holding locations: relative local paths become absolute, because Tune runs
# each trial in its own working directory.
PATH_KEYS = ("data.source", "data.cache", "data.manifest", "storage_path")
LOSS_METRICS = ("loss", "val_loss")
# Throughput metrics join the reports from the first logged step on (train.log_every).
TELEMETRY_METRICS = ("samples_per_s", "tokens_per_s", "data_wait_fraction", "step_time_s", "mfu")


@dataclass(frozen=True)
class TrialTemplate:
    """Everything a trial needs to build its experiment; small and picklable (shipped to trials)."""

    base: str  # model preset name, or an absolute path to an experiment YAML
    overrides: tuple[tuple[str, Any], ...]  # dotted key -> value, applied in order before the sample
    params: tuple[Param, ...]
    runs_root: str  # where the trials' Train runs live: <sweep dir>/trials

    def experiment(self, sampled: dict[str, Any], name: str | None = None, storage_path: str | None = None) -> ExperimentConfig:
        """The experiment of one sample (searcher values; choice labels are decoded here)."""
        params = {p.key: p for p in self.params}
        pairs = list(self.overrides) + [(k, params[k].decode(v) if k in params else v) for k, v in sampled.items()]
        if name is not None:
            pairs.append(("name", name))
        if storage_path is not None:
            pairs.append(("storage_path", storage_path))
        # JSON is YAML: `--set` parsing gives back exactly these values (lists, null, quoted strings).
        sets = [f"{key}={json.dumps(value)}" for key, value in pairs]
        from vidgen_ray.models.registry import PRESETS

        if self.base in PRESETS:
            return load_experiment(self.base, sets=sets)
        return load_experiment(config_file=self.base, sets=sets)

    def trial_experiment(self, sampled: dict[str, Any], trial_id: str) -> ExperimentConfig:
        return self.experiment(sampled, name=f"trial_{trial_id}", storage_path=self.runs_root)

    # --- built and checked on the sweep's driver ---------------------------------------------------
    @classmethod
    def from_sweep(cls, sweep: SweepConfig, sweep_dir: str, need_data: bool = True) -> "TrialTemplate":
        """Check the sweep against the experiment it searches (every searched value must build a
        valid experiment, for every family searched), then freeze what the trials need."""
        from vidgen_ray.data.prepare import is_prepared

        template = cls(sweep.base, tuple(sweep.overrides().items()), tuple(sweep.params), storage.join(sweep_dir, "trials"))
        try:
            base = template.experiment({})
        except (ConfigError, KeyError, ValueError) as exc:
            raise SweepError(f"the base experiment ({sweep.base} + fixed) is invalid: {exc}") from exc
        extra: dict[str, Any] = {}
        for key in PATH_KEYS:
            section, _, attr = key.rpartition(".")
            value = getattr(base.data if section else base, attr)
            if value and storage.local_path(value) is not None and storage.local_path(value) != value:
                extra[key] = storage.local_path(value)
        if need_data:
            if not base.data.source:
                raise SweepError("data.source is empty: pass --data URI or set fixed: {data.source: URI}")
            if not base.data.cache and not is_prepared(base.data.source):
                # Clips are decoded once and read by every trial (not decoded again per trial).
                extra["data.cache"] = storage.join(sweep_dir, "clip_cache")
                log.info("data.cache is unset: decoded clips go to %s and every trial reads them", extra["data.cache"])
        if base.train.tracker_group is None:
            extra["train.tracker_group"] = sweep.name  # one tracker run per trial, grouped by sweep
        template = replace(template, overrides=template.overrides + tuple(extra.items()))
        template.check(sweep)
        return template

    def check(self, sweep: SweepConfig) -> None:
        presets = next((p.options for p in self.params if p.key == "model.preset"), (None,))
        families = set()
        for preset in presets:
            fixed = {} if preset is None else {"model.preset": preset}
            for param in self.params:
                for value in param.probe_values():
                    if param.key == "model.preset" and preset is not None and value != preset:
                        continue
                    try:
                        cfg = self.experiment({**fixed, param.key: param.encode(value, "space") if param.kind == "choice" else value})
                    except (ConfigError, KeyError, ValueError) as exc:
                        with_family = f" with model.preset={preset}" if preset is not None and param.key != "model.preset" else ""
                        raise SweepError(f"space.{param.key}={value!r}{with_family} does not build a valid experiment: {exc}") from exc
                    families.add(cfg.model.family)
                    check_reports(cfg, sweep)
        if len(families) > 1 and sweep.metric.startswith(LOSS_METRICS):
            log.warning("the sweep compares families %s on %r: each family's loss has its own scale, so the "
                        "numbers do not rank models across families; prefer a shared metric for such sweeps",
                        sorted(families), sweep.metric)

    def max_reports(self, sweep: SweepConfig) -> int:
        """Tune iterations of the longest trial: ASHA's max_t when the sweep file leaves it 0."""
        steps_param = next((p for p in self.params if p.key == "train.max_steps"), None)
        sampled = {} if steps_param is None else {"train.max_steps": steps_param.upper()}
        t = self.experiment(sampled).train
        if not t.max_steps:
            raise SweepError("train.max_steps is 0 (epochs mode), so the number of reports is unknown: "
                             "set fixed: {train.max_steps: N} or scheduler.max_t")
        return report_count(t.max_steps, t.val_every, t.checkpoint_every)


def report_count(max_steps: int, val_every: int, checkpoint_every: int) -> int:
    """How many times the train loop calls ``ray.train.report`` in a run of ``max_steps``."""
    steps = {max_steps}
    for every in (val_every, checkpoint_every):
        if every:
            steps.update(range(every, max_steps, every))
    return len(steps)


def check_reports(cfg: ExperimentConfig, sweep: SweepConfig) -> None:
    """Every report must carry the metric, and ASHA needs more than one report per trial."""
    t = cfg.train
    for metric in (o.metric for o in sweep.objectives):
        if metric.startswith("val_"):
            if not t.val_every:
                raise SweepError(f"metric {metric!r} needs validation during training: set fixed: {{train.val_every: N}} "
                                 f"(each validation is one report to Tune)")
            if t.checkpoint_every % t.val_every:
                raise SweepError(f"train.checkpoint_every={t.checkpoint_every} is not a multiple of train.val_every={t.val_every}: "
                                 f"a checkpoint report before the first validation would lack {metric!r}; "
                                 f"set train.checkpoint_every to a multiple of train.val_every")
        first_report = min(every for every in (t.val_every, t.checkpoint_every, t.max_steps) if every)
        if metric in TELEMETRY_METRICS and t.log_every > first_report and first_report != t.max_steps:
            raise SweepError(f"metric {metric!r} is measured at logged steps, but train.log_every={t.log_every} comes after "
                             f"the first report at step {first_report}: set train.log_every <= {first_report}")
    if sweep.scheduler.kind == "asha" and t.max_steps:
        reports = report_count(t.max_steps, t.val_every, t.checkpoint_every)
        if reports <= sweep.scheduler.grace_period:
            raise SweepError(f"a trial of {t.max_steps} steps reports {reports} time(s), not more than "
                             f"scheduler.grace_period={sweep.scheduler.grace_period}, so ASHA could never stop one: "
                             f"report more often (lower train.val_every) or lower scheduler.grace_period")


def train_trial(config: dict[str, Any], template: TrialTemplate) -> None:
    """The Tune trainable: runs in a Tune trial actor and drives one Train run."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from vidgen_ray.train.run import build_trainer

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = template.trial_experiment(config, trial_id)
    log.info("trial %s: %s", trial_id, cfg.summary())
    build_trainer(cfg, callbacks=[TuneReportCallback()]).fit()
