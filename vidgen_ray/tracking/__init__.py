"""Experiment trackers (TensorBoard, Weights & Biases, MLflow) behind one small interface: see ``base.py``."""

from vidgen_ray.tracking.base import (TRACKERS, Tracker, TrackerRun, Trackers, TrackerUnavailable, check_names,
                                      open_trackers, require, tile)

__all__ = ["TRACKERS", "Tracker", "TrackerRun", "Trackers", "TrackerUnavailable", "check_names", "open_trackers",
           "require", "tile"]
