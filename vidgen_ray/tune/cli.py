"""The sweep command line (``jobs/tune.py``; ``vidgen-ray tune`` takes the same arguments).

    python jobs/tune.py tuning/demo_sweep.yaml --data ./outputs/synth --storage ./outputs/sweeps
    python jobs/tune.py tuning/dit_sweep.yaml --data s3://bucket/videos --dry-run
    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/tune.py tuning/dit_sweep.yaml --data s3://bucket/videos --storage s3://bucket/sweeps \
        --set parallel.use_gpu=true --set parallel.worker_resource=train

Exit status: 0 when the sweep finished, 130 when it was interrupted (rerun to resume), 2 for a
sweep-file or config error.
"""

from __future__ import annotations

import argparse
import signal
import sys

from vidgen_ray.configs import ConfigError

INTERRUPTED = 130


def build_parser(prog: str = "jobs/tune.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Hyperparameter search (Ray Tune + Optuna TPE + ASHA) over real training runs.")
    p.add_argument("sweep", help="sweep file, e.g. tuning/dit_sweep.yaml (schema: vidgen_ray/tune/sweep.py)")
    p.add_argument("--data", help="data source for every trial (raw videos or a prepared dataset); sets data.source")
    p.add_argument("--storage", help="where the sweep folder goes (local or s3://); sets the sweep's storage_path")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override an experiment field for every trial, e.g. --set parallel.use_gpu=true "
                        "(a searched key is pinned to the value; repeatable)")
    p.add_argument("--trials", type=int, help="number of trials (sets num_trials)")
    p.add_argument("--name", help="sweep name (the folder under --storage); rerunning with the same name resumes")
    p.add_argument("--resume", choices=["auto", "always", "never"], default="auto",
                   help="auto (default): resume the sweep if its folder holds one; always: require that; never: refuse")
    p.add_argument("--dry-run", action="store_true", help="check the sweep and print what would run, then exit")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local instance)")
    return p


def _dry_run(sweep) -> None:
    from vidgen_ray import storage
    from vidgen_ray.tune.trial import TrialTemplate

    template = TrialTemplate.from_sweep(sweep, storage.join(sweep.storage_path, sweep.name), need_data=False)
    base = template.trial_experiment({}, "<id>")
    max_t = sweep.scheduler.max_t or template.max_reports(sweep)
    objectives = ", ".join(f"{o.mode} {o.metric}" for o in sweep.objectives)
    print(f"sweep {sweep.name}: {sweep.num_trials} trials, {sweep.max_concurrent} at a time, {objectives}")
    print(f"base trial: {base.summary()}")
    print(f"scheduler: {sweep.scheduler.kind}" + (f" (grace {sweep.scheduler.grace_period}, reduction "
          f"{sweep.scheduler.reduction_factor}, max_t {max_t} reports)" if sweep.scheduler.kind == "asha" else ""))
    for param in template.params:
        print(f"  {param.describe()}")
    print(f"-> {storage.join(sweep.storage_path, sweep.name)}")


def main(argv: list[str] | None = None, prog: str = "jobs/tune.py") -> int:
    from vidgen_ray.runtime import setup_logging
    from vidgen_ray.tune.sweep import load_sweep, with_cli

    setup_logging()
    args = build_parser(prog).parse_args(argv)
    try:
        sweep = with_cli(load_sweep(args.sweep), data=args.data, storage=args.storage, sets=args.sets,
                         trials=args.trials, name=args.name)
        if args.dry_run:
            _dry_run(sweep)
            return 0
        from vidgen_ray.tune.run import run_sweep

        # `ray job stop` sends SIGTERM: stop like Ctrl-C, so Tune saves the sweep's state to resume from.
        signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
        result = run_sweep(sweep, resume=args.resume, address=args.address)
    except ConfigError as exc:
        print(f"sweep error: {exc}", file=sys.stderr)
        return 2
    print(f"sweep folder: {result.path}")
    return 0 if result.complete else INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
