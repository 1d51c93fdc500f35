"""What a sweep leaves behind in its folder, from Tune's results:

    results.parquet / results.csv   one row per trial: status, iterations, metrics, sampled values
    best.yaml                       the best trial's full experiment: python jobs/train.py --config best.yaml
    metric.png                      the metric per trial over reports, and the best so far over time
    summary.json                    counts, the best trial, the files above

A trial is ``completed`` (ran all its steps), ``stopped`` (ended early: ASHA, the time budget, or
the run's own early stopping),
``error`` (its run raised) or ``unfinished`` (the sweep was interrupted while it ran or waited).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

from vidgen_ray import storage
from vidgen_ray.config import ExperimentConfig
from vidgen_ray.configs import to_yaml
from vidgen_ray.runtime import get_logger
from vidgen_ray.tune.sweep import SweepConfig
from vidgen_ray.tune.trial import TrialTemplate

log = get_logger("tune.report")


@dataclass
class SweepResult:
    path: str  # the sweep folder (local path or URI)
    rows: list[dict[str, Any]]  # one per trial, as in results.parquet
    best: dict[str, Any] | None  # the best row on the primary metric
    best_config: ExperimentConfig | None
    complete: bool  # every trial ran to its end (or was stopped / failed); False: rerun to resume
    files: dict[str, str] = field(default_factory=dict)

    def row(self, trial_id: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["trial_id"] == trial_id)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def saved_statuses(grid) -> dict[str, str]:
    """Trial statuses (in creation order) as the experiment state on storage holds them. Tune writes that state before it
    shuts trials down, so a trial cut off by an interruption reads RUNNING/PENDING there (and is
    resumed by a rerun) while the in-memory result grid already calls it TERMINATED."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(grid.experiment_path, storage_filesystem=grid.filesystem)
    return {t.trial_id: t.status for t in analysis.trials}


def trial_rows(grid, sweep: SweepConfig, template: TrialTemplate) -> list[dict[str, Any]]:
    """One plain row per trial (config values as the searcher stored them: scalars)."""
    from ray.tune.experiment import Trial

    status_of = saved_statuses(grid)
    rows = []
    for result in grid:
        trial_id = result.path.rstrip("/").rsplit("trial_", 1)[-1]
        m = result.metrics or {}
        budget = template.experiment(result.config or {}).train.max_steps
        ran_out = m.get("step", 0) >= budget if budget else m.get("done")  # Tune marks stopped trials done too
        if result.error is not None:
            status = "error"
        elif ran_out:
            status = "completed"
        elif status_of.get(trial_id) == Trial.TERMINATED:
            status = "stopped"
        else:
            status = "unfinished"
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "status": status,
            "iterations": int(m.get("training_iteration") or 0),
            "step": int(m.get("step") or 0),
        }
        for obj in sweep.objectives:
            value = m.get(obj.metric)
            row[obj.metric] = float(value) if _finite(value) else None
        row["time_s"] = round(float(m.get("time_total_s") or 0.0), 1)
        for param in template.params:
            row[param.key] = (result.config or {}).get(param.key)
        row["error"] = (str(result.error).strip().splitlines() or [""])[-1][:300] if result.error is not None else ""
        row["checkpoint"] = as_uri(m.get("checkpoint_path") or "", sweep.storage_path)
        rows.append(row)
    mark_pareto(rows, sweep)
    order = {trial_id: i for i, trial_id in enumerate(status_of)}  # the order the searcher proposed them
    return sorted(rows, key=lambda r: order.get(r["trial_id"], len(order)))


def as_uri(path: str, storage_path: str) -> str:
    """Tune reports object-store paths without their scheme ("bucket/key"): give it back."""
    if path and "://" not in path and storage.local_path(storage_path) is None:
        return f"{storage_path.split('://', 1)[0]}://{path}"
    return path


def mark_pareto(rows: list[dict[str, Any]], sweep: SweepConfig) -> None:
    """``pareto``: no other trial is at least as good on every objective and better on one."""
    objs = sweep.objectives

    def key(row):  # larger is better on every axis
        return [row[o.metric] if o.mode == "max" else -row[o.metric] for o in objs]

    scored = [r for r in rows if all(r[o.metric] is not None for o in objs)]
    for row in rows:
        if row not in scored:
            row["pareto"] = False
            continue
        mine = key(row)
        row["pareto"] = not any(
            all(a >= b for a, b in zip(key(other), mine)) and key(other) != mine for other in scored if other is not row
        )


def best_row(rows: list[dict[str, Any]], sweep: SweepConfig) -> dict[str, Any] | None:
    scored = [r for r in rows if r[sweep.metric] is not None]
    if not scored:
        return None
    pick = min if sweep.mode == "min" else max
    return pick(scored, key=lambda r: r[sweep.metric])


def format_table(rows: list[dict[str, Any]], sweep: SweepConfig, template: TrialTemplate, best: dict | None) -> str:
    """A compact fixed-width table for the job log."""
    short: dict[str, str] = {}
    for param in template.params:
        name = param.key.rsplit(".", 1)[-1]
        short[param.key] = name if name not in short.values() else param.key
    columns = ["trial_id", "status", "iterations", "step", *(o.metric for o in sweep.objectives), *short]
    header = ["trial", "status", "iters", "step", *(o.metric for o in sweep.objectives), *short.values()]

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "-" if value is None else str(value)

    body = [[cell(r[c]) for c in columns] + ["*" if r is best else ""] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) + (f"  {b[-1]}" if b[-1] else "") for b in body]
    return "\n".join(lines)


def metric_plot(grid, sweep: SweepConfig, status: dict[str, str]) -> bytes:
    """Left: the metric at every report of every trial (an early stop ends in x). Right: every report
    against wall-clock time since the sweep's first report, and the best value so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, better = sweep.metric, (min if sweep.mode == "min" else max)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = []
    for result in grid:
        df = result.metrics_dataframe
        if df is None or metric not in df or "training_iteration" not in df:
            continue
        # A trial restarted after an interruption reports its iterations again: keep the newest.
        df = df[df[metric].notna()].drop_duplicates("training_iteration", keep="last")
        if len(df):
            series.append((result, df))
    start = min((float(df["timestamp"].min()) for _, df in series if "timestamp" in df), default=0.0)
    points: list[tuple[float, float]] = []
    for result, df in series:
        trial_id = result.path.rstrip("/").rsplit("trial_", 1)[-1]
        line, = left.plot(df["training_iteration"], df[metric], marker="o", ms=3, lw=1.2, label=trial_id)
        if status.get(trial_id) != "completed":
            left.plot(df["training_iteration"].iloc[-1], df[metric].iloc[-1], "x", ms=9, color=line.get_color())
        if "timestamp" in df:
            minutes = (df["timestamp"].astype(float) - start) / 60.0
            right.plot(minutes, df[metric], ".", color=line.get_color(), alpha=0.7)
            points += list(zip(minutes.tolist(), df[metric].astype(float).tolist()))
    points.sort()
    if points:
        best_so_far, current = [], None
        for _, value in points:
            current = value if current is None else better(current, value)
            best_so_far.append(current)
        right.step([p[0] for p in points], best_so_far, where="post", color="black", lw=1.8, label=f"best {metric} so far")
        right.legend(loc="best", fontsize=8)
    left.set(xlabel="report (Tune iteration)", ylabel=metric, title=f"{sweep.name}: {metric} per trial (x = stopped early)")
    right.set(xlabel="minutes since the first report", ylabel=metric, title="over time")
    if 0 < len(series) <= 12:
        left.legend(fontsize=7, title="trial", title_fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(grid, sweep: SweepConfig, template: TrialTemplate, sweep_dir: str) -> SweepResult:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rows = trial_rows(grid, sweep, template)
    best = best_row(rows, sweep)
    # Done when no trial waits to be resumed and the searcher proposed them all (or the budget ended it).
    unfinished = sum(r["status"] == "unfinished" for r in rows)
    complete = unfinished == 0 and (len(rows) >= sweep.num_trials or bool(sweep.budget.time_budget_s))
    files = {name: storage.join(sweep_dir, name) for name in ("results.parquet", "results.csv", "metric.png", "summary.json")}

    table = pa.Table.from_pylist([{k: (v if not isinstance(v, (list, tuple)) else str(v)) for k, v in r.items()} for r in rows])
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(files["results.parquet"], buf.getvalue())
    buf = io.BytesIO()
    pcsv.write_csv(table, buf)
    storage.write_bytes(files["results.csv"], buf.getvalue())
    storage.write_bytes(files["metric.png"], metric_plot(grid, sweep, {r["trial_id"]: r["status"] for r in rows}))

    best_config = None
    if best is not None:
        sampled = {p.key: best[p.key] for p in template.params}
        # It trains next to the sweep (a cluster sweep's storage is shared), unless `fixed` names a place.
        best_storage = sweep.overrides().get("storage_path", sweep.storage_path)
        best_config = template.experiment(sampled, name=f"{sweep.name}-best", storage_path=best_storage)
        files["best.yaml"] = storage.join(sweep_dir, "best.yaml")
        header = (f"# Best trial {best['trial_id']} of sweep {sweep.name!r}: {sweep.metric} = {best[sweep.metric]:.6g} "
                  f"after {best['step']} steps.\n# Train it: python jobs/train.py --config best.yaml "
                  f"[--set train.max_steps=N]\n")
        storage.write_text(files["best.yaml"], header + to_yaml(best_config))
    summary = {
        "name": sweep.name, "complete": complete, "trials": len(rows), "num_trials": sweep.num_trials,
        "status": {s: sum(r["status"] == s for r in rows) for s in ("completed", "stopped", "error", "unfinished")},
        "metric": sweep.metric, "mode": sweep.mode, "best": best, "files": files,
    }
    storage.write_text(files["summary.json"], json.dumps(summary, indent=2, default=str))
    print(format_table(rows, sweep, template, best), flush=True)
    if best is not None:
        print(f"best: trial {best['trial_id']} {sweep.metric}={best[sweep.metric]:.6g} -> {files['best.yaml']}", flush=True)
    return SweepResult(sweep_dir, rows, best, best_config, complete, files)
