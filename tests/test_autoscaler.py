"""The preflight against a real autoscaler (issue 17): a `ray start --head` whose monitor runs Ray's fake
multi-node provider, which launches real raylets on this host. A job that the head alone cannot place
asks the autoscaler, waits, and trains on the node it adds; a job that even the autoscaler's node types
cannot place is refused in seconds, naming what the autoscaler could add. Jobs go in through the
`ray job submit` CLI with the repository as the working dir, as a user's do."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vidgen_ray.checkpoints import latest_checkpoint, read_meta

from ray_head import Head, train_job_args

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def autoscaling_head(ray_session):
    # 1 CPU on the head; up to one 2-CPU worker node. 2 training workers (1 CPU each) and one decode task
    # (0.67 CPU) need 2.67 CPUs: they fit only once the autoscaler has added the node.
    h = Head(cpus=1, node_types={"cpu2": {"resources": {"CPU": 2}, "max_workers": 1}}, max_workers=1)
    try:
        yield h
    finally:
        h.stop()


def test_a_job_waits_for_the_autoscaler_and_one_it_cannot_help_is_refused(autoscaling_head: Head, synth_dir: Path,
                                                                          tmp_path: Path):
    runs = tmp_path / "runs"
    common = train_job_args(synth_dir, runs, "parallel.resource_wait_s=240")

    # 5 workers: the head (1 CPU) plus the one 2-CPU node the autoscaler may add cannot hold them.
    t0 = time.monotonic()
    big = autoscaling_head.submit(*common, "--name", "too-big", "--workers", "5", timeout=120)
    seconds = time.monotonic() - t0
    log = big.stdout + big.stderr
    assert big.returncode != 0, log[-3000:]
    assert seconds < 60, f"the oversized job took {seconds:.0f} s to fail"
    assert "nor can the autoscaler: it may add 1 more cpu2 {CPU 2}" in log, log[-3000:]
    assert "training workers: 5 x {CPU 1}" in log and "Traceback" not in log, log[-3000:]

    ok = autoscaling_head.submit(*common, "--name", "grows", "--workers", "2", timeout=600)
    log = ok.stdout + ok.stderr
    assert ok.returncode == 0 and "succeeded" in log, log[-4000:]
    assert "waiting up to 240 s for the autoscaler to add nodes" in log, log[-4000:]
    assert "the autoscaler added what was missing (2 node(s))" in log, log[-4000:]
    assert read_meta(latest_checkpoint(str(runs / "grows")))["state"]["step"] == 4
