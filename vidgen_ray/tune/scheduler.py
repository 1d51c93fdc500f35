"""ASHA that keeps its memory across a resume.

Tune stores the searcher with the experiment, but not the scheduler's rungs (``TuneController``
leaves ``_scheduler_alg`` out of its saved state): after ``Tuner.restore`` a plain ASHA would judge
the trials that follow an interruption only against each other, however far behind the trials
before it they are. This ASHA is unpickled from the experiment's own ``tuner.pkl`` on restore, and
before it takes its first trial it replays every report stored in the experiment into its rungs,
in the order they were made.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray.tune.schedulers import ASHAScheduler

from vidgen_ray import storage
from vidgen_ray.runtime import get_logger

log = get_logger("tune.scheduler")


@dataclass(frozen=True)
class _TrialRef:
    trial_id: str  # all a rung needs of a trial


def stored_reports(experiment_uri: str, metric: str) -> list[tuple[float, str, int, float]]:
    """(timestamp, trial id, iteration, metric) of every stored report that carries ``metric``."""
    from ray.tune import ExperimentAnalysis

    local = storage.local_path(experiment_uri)
    fs, path = (None, local) if local is not None else storage.resolve(experiment_uri)
    analysis = ExperimentAnalysis(path, storage_filesystem=fs)
    reports = []
    for trial_id, df in analysis.trial_dataframes.items():
        if metric not in df or "training_iteration" not in df:
            continue
        df = df[df[metric].notna()].drop_duplicates("training_iteration", keep="first")
        for row in df.itertuples(index=False):
            values = row._asdict()
            reports.append((float(values.get("timestamp", 0)), trial_id, int(values["training_iteration"]), float(values[metric])))
    return sorted(reports)


class ResumableASHA(ASHAScheduler):
    def __init__(self, experiment_uri: str, **kwargs):
        super().__init__(**kwargs)
        self.experiment_uri = experiment_uri
        self._history_loaded = True  # a new sweep has no history

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._history_loaded = False  # unpickled: restored with the experiment

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self._history_loaded:
            self._history_loaded = True
            self.replay(self.experiment_uri)
        super().on_trial_add(tune_controller, trial)

    def replay(self, experiment_uri: str) -> int:
        """Record the stored reports in the rungs (their stop/continue decisions were made then)."""
        try:
            reports = stored_reports(experiment_uri, self._metric)
        except Exception as exc:  # noqa: BLE001 - a sweep without stored results yet has nothing to replay
            log.info("ASHA: no stored reports to replay from %s (%s)", experiment_uri, exc)
            return 0
        bracket = self._brackets[0]  # run.py makes one bracket (ASHA's default)
        for _, trial_id, iteration, value in reports:
            bracket.on_result(_TrialRef(trial_id), iteration, self._metric_op * value)
        log.info("ASHA: replayed %d stored reports of %d trials into the rungs", len(reports), len({r[1] for r in reports}))
        return len(reports)
