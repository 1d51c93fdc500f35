"""Run a sweep: Optuna's TPE proposes, ASHA stops the laggards, every trial is a real Train run.

    python jobs/tune.py tuning/demo_sweep.yaml --data ./outputs/synth            # local, CPU
    ray job submit --working-dir . -- python jobs/tune.py tuning/dit_sweep.yaml --data s3://bucket/videos

The Tune experiment lives at ``<storage_path>/<name>`` (local or object storage). Rerunning the same
command after an interruption (Ctrl-C, ``ray job stop``, a lost driver) restores it: finished trials
are kept, the searcher keeps what it learned, ASHA keeps its rungs (scheduler.py), and trials that
were running start again, their Train runs resuming from their own newest checkpoints. A finished sweep reruns instantly and only
rewrites its outputs (results table, best.yaml, plot: see report.py).
"""

from __future__ import annotations

import json
from typing import Literal

from vidgen_ray import preflight, storage, tracking
from vidgen_ray.configs import to_dict
from vidgen_ray.runtime import get_logger, init_ray
from vidgen_ray.tune.report import SweepResult, write_outputs
from vidgen_ray.tune.space import SweepError
from vidgen_ray.tune.sweep import SweepConfig, with_cli
from vidgen_ray.tune.trial import TrialTemplate, train_trial

log = get_logger("tune.run")

Resume = Literal["auto", "always", "never"]
DEFINITION = "sweep.json"  # the resolved sweep a run started with; a resume must match it


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"  # the same name as the trial's Train run under trials/


def tune_location(uri: str):
    """(pyarrow filesystem or None, path) in the form Tune's storage arguments take."""
    local = storage.local_path(uri)
    if local is not None:
        return None, local
    return storage.resolve(uri)


def state_api_problem() -> str | None:
    """Why Ray processes cannot reach this cluster's state API (served by the dashboard), or None.

    ASHA stops trials by ending their driver process; the Train controller dies with it, and the
    worker placement group it made is removed only by Ray Train's PlacementGroupCleaner, which asks
    the state API whether the controller is alive. Without it the stopped trial's CPUs/GPUs stay
    reserved and later trials wait forever. Probed from a task, which sees what the cleaner sees."""
    import ray

    @ray.remote(num_cpus=0)
    def probe() -> str | None:
        from ray.util.state import list_nodes

        try:
            nodes = list_nodes(limit=10_000, timeout=20, raise_on_missing_output=False)
        except Exception as exc:  # noqa: BLE001 - the reason is the answer
            return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        mine = ray.get_runtime_context().get_node_id()
        if mine not in {n.node_id for n in nodes}:
            return "the state API answering here belongs to another Ray instance"
        return None

    try:
        return ray.get(probe.remote(), timeout=120)
    except Exception as exc:  # noqa: BLE001
        return f"the probe task failed: {exc}"


def warm_clip_cache(template: TrialTemplate, sweep: SweepConfig) -> None:
    """Decode the clips once, before trials start, for every clip shape the sweep can sample (the
    family choice may change it), and check the val split a val_* metric needs."""
    from vidgen_ray.data.prepare import training_units

    presets = next((p.options for p in template.params if p.key == "model.preset"), (None,))
    seen = set()
    for preset in presets:
        data = template.experiment({} if preset is None else {"model.preset": preset}).data
        key = json.dumps(to_dict(data), sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        units, _ = training_units(data)
        if any(o.metric.startswith("val_") for o in sweep.objectives) and not len(units["val"]):
            raise SweepError(f"the val split of {data.source} is empty, so {sweep.metric!r} is never reported: "
                             f"set fixed: {{data.split.val: 0.1}} (and train/test so they sum to 1) or metric: loss")


def check_definition(sweep: SweepConfig, sweep_dir: str, restoring: bool) -> None:
    """Tune restores the searcher and trial count it started with; refuse a changed sweep file
    instead of silently running the old one."""
    uri = storage.join(sweep_dir, DEFINITION)
    current = json.loads(json.dumps(to_dict(sweep), default=str))
    if restoring and storage.exists(uri):
        stored = json.loads(storage.read_text(uri))
        changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        if changed:
            raise SweepError(f"the sweep at {sweep_dir} was started with a different definition ({', '.join(changed)} "
                             f"changed); a resume runs the stored one: restore the old values, or use a new name")
    storage.write_text(uri, json.dumps(current, indent=2))


def make_trainable(sweep: SweepConfig, template: TrialTemplate):
    from ray import tune

    return tune.with_resources(tune.with_parameters(train_trial, template=template), sweep.resources.driver_request())


def build_tuner(sweep: SweepConfig, template: TrialTemplate, sweep_dir: str, max_t: int, callbacks: list | None,
                concurrent: int | None = None):
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from vidgen_ray.tune.scheduler import ResumableASHA

    objectives = sweep.objectives
    multi = len(objectives) > 1
    searcher = OptunaSearch(
        space={p.key: p.distribution() for p in template.params},
        metric=[o.metric for o in objectives] if multi else sweep.metric,
        mode=[o.mode for o in objectives] if multi else sweep.mode,
        points_to_evaluate=sweep.encoded_points() or None,
        # TPE models the space after its random start-up trials; a short sweep gets a short start-up.
        sampler=optuna.samplers.TPESampler(seed=sweep.seed, n_startup_trials=max(1, min(10, sweep.num_trials // 3))),
    )
    scheduler = None
    if sweep.scheduler.kind == "asha":
        # Multi-objective: ASHA ranks trials on one number, the primary metric (see sweep.py).
        scheduler = ResumableASHA(sweep_dir, time_attr="training_iteration", metric=sweep.metric, mode=sweep.mode, max_t=max_t,
                                  grace_period=sweep.scheduler.grace_period, reduction_factor=sweep.scheduler.reduction_factor,
                                  brackets=1)
    fs, path = tune_location(sweep.storage_path)
    return tune.Tuner(
        make_trainable(sweep, template),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=sweep.num_trials,
            max_concurrent_trials=concurrent or sweep.max_concurrent, time_budget_s=sweep.budget.time_budget_s or None,
            trial_dirname_creator=trial_dirname, trial_name_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=sweep.name, storage_path=path, storage_filesystem=fs, callbacks=callbacks, verbose=1,
            # A trial's driver process is light; a Train *worker* failure is retried inside the run
            # (parallel.max_failures). A trial that still fails is recorded as an error, and the sweep goes on.
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


def run_sweep(sweep: SweepConfig, overrides: list[str] | tuple[str, ...] = (), resume: Resume = "auto",
              callbacks: list | None = None, address: str | None = None) -> SweepResult:
    """Run (or resume) ``sweep`` and write its outputs. ``overrides`` are ``--set key=value`` strings
    applied to every trial; ``callbacks`` are extra Tune callbacks (``ray.tune.Callback``), stored with
    the experiment (a resume runs the stored ones)."""
    from ray import tune

    from vidgen_ray.train.run import local_cpus_needed

    if resume not in ("auto", "always", "never"):
        raise SweepError(f"resume={resume!r}: use 'auto' (restore when the sweep exists), 'always' or 'never'")
    if overrides:
        sweep = with_cli(sweep, sets=overrides)
    sweep_dir = storage.join(sweep.storage_path, sweep.name)
    template = TrialTemplate.from_sweep(sweep, sweep_dir)
    max_t = sweep.scheduler.max_t or template.max_reports(sweep)
    base = template.experiment({})
    tracking.require(base.train.trackers)
    # A local instance needs logical CPUs for every trial in flight (the 2-core default is not enough).
    init_ray(address=address, num_cpus=sweep.max_concurrent * local_cpus_needed(base) + 1,
             workers_per_cpu=base.data.decode_tasks_per_cpu)
    concurrent = preflight.trials_that_fit(base, sweep.max_concurrent, sweep.resources.driver_request())
    if concurrent < sweep.max_concurrent:
        log.warning("the cluster places %d trial(s) at a time with their decode stages, not max_concurrent=%d: "
                    "running %d at a time (more would hold CPUs that the others' decoding waits for)",
                    concurrent, sweep.max_concurrent, concurrent)
    problem = state_api_problem() if sweep.scheduler.kind == "asha" else None
    if problem:
        raise SweepError(f"ASHA needs Ray's state API (the dashboard) reachable from every Ray process: Ray Train frees a "
                         f"stopped trial's workers through it, or later trials wait forever ({problem}). Start Ray with "
                         f"the dashboard (ray start --head --include-dashboard=true); when several Ray instances share "
                         f"this host, give the workers RAY_API_SERVER_ADDRESS=http://<dashboard host:port>. "
                         f"Or set scheduler: {{kind: none}}")
    warm_clip_cache(template, sweep)

    fs, path = tune_location(sweep.storage_path)
    experiment = path.rstrip("/") + "/" + sweep.name
    exists = tune.Tuner.can_restore(experiment, storage_filesystem=fs)
    if resume == "always" and not exists:
        raise SweepError(f"nothing to resume at {sweep_dir}: run without resume='always' to start the sweep")
    if resume == "never" and exists:
        raise SweepError(f"a sweep already exists at {sweep_dir}: rerun to resume it, or choose another name")
    check_definition(sweep, sweep_dir, restoring=exists)
    log.info("sweep %s: %d trials (%d at a time), %s %s, ASHA max_t %s reports, -> %s%s", sweep.name, sweep.num_trials,
             concurrent, sweep.mode, sweep.metric, max_t if sweep.scheduler.kind == "asha" else "-",
             sweep_dir, " (resuming)" if exists else "")
    for param in template.params:
        log.info("  %s", param.describe())
    if exists:
        # The searcher, scheduler, settings and callbacks come back from the experiment's own state,
        # the number of trials at a time included.
        if concurrent < sweep.max_concurrent:
            log.warning("resuming with the stored trials-at-a-time; if trials wait for each other's CPUs, "
                        "start the sweep again under a new name with max_concurrent=%d", concurrent)
        tuner = tune.Tuner.restore(experiment, make_trainable(sweep, template), resume_unfinished=True,
                                   resume_errored=True, storage_filesystem=fs)
    else:
        tuner = build_tuner(sweep, template, sweep_dir, max_t, callbacks, concurrent)
    grid = tuner.fit()
    for error in grid.errors:
        log.warning("a trial failed: %s", str(error).strip().splitlines()[-1] if str(error).strip() else repr(error))
    result = write_outputs(grid, sweep, template, sweep_dir)
    if not result.complete:
        log.warning("the sweep was interrupted (%d of %d trials finished): rerun the same command to resume it",
                    sum(r["status"] != "unfinished" for r in result.rows), sweep.num_trials)
    return result

