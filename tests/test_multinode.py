"""Issue: a multi-node job survives a dead node. A local cluster of five raylets on 127.0.0.1
(head, a CPU "decode" node, three "train" nodes), a job submitted through the head's job API that
decodes raw videos on the decode node and trains on two train nodes; one train node is killed
mid-run. See tests/multinode_rehearsal.py for the cluster itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vidgen_ray.checkpoints import latest_checkpoint, read_meta

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REHEARSAL = Path(__file__).with_name("multinode_rehearsal.py")


def test_job_on_a_multinode_cluster_survives_a_killed_node(synth_dir: Path, tmp_path: Path):
    out = tmp_path / "result.json"
    storage = tmp_path / "runs"
    proc = subprocess.run([sys.executable, str(REHEARSAL), "--data", str(synth_dir), "--storage", str(storage),
                           "--out", str(out), "--steps", "16"], capture_output=True, text=True, timeout=900)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["ok"], result.get("log_tail", "") + proc.stderr[-2000:]
    # Decoding ran on the decode node and nowhere else.
    assert result["decode_task_nodes"] == [result["decode_node"]]
    # Training ran on train nodes; one of them was killed.
    assert set(result["train_worker_nodes_before"]) <= set(result["train_node_ids"])
    assert result["killed_node"] in result["train_worker_nodes_before"]
    # The run completed every step once, resuming from a checkpoint rather than from scratch.
    state = read_meta(latest_checkpoint(str(storage / "rehearsal")))["state"]
    assert state["step"] == 16 and state["resumes"] >= 1
    assert [s for s, _ in state["history"]] == list(range(1, 17))
