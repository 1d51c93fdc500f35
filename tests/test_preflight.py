"""The resource preflight: a run that cannot be placed fails in seconds with what to change, a run
that can starts, and an autoscaler that could add the missing nodes is waited for (up to a limit)."""

from __future__ import annotations

import time

import pytest

from vidgen_ray import preflight
from vidgen_ray.config import load_experiment
from vidgen_ray.preflight import Demand, Node, ResourceError, check, training_demands, unplaced


def nodes(*cpus: float, memory_gib: float = 8.0) -> list[Node]:
    return [Node(f"n{i}", {"CPU": c, "memory": memory_gib * 2**30}) for i, c in enumerate(cpus)]


def experiment(*sets: str):
    return load_experiment("gan-debug", sets=list(sets))


def test_two_workers_on_two_cpus_leave_the_decode_stage_nothing():
    # The trap from issue 17: 2 workers x 1 CPU on a 2-CPU head node started, then waited forever.
    demands = training_demands(experiment("parallel.num_workers=2"))
    left = unplaced(demands, nodes(2))
    assert [what for what, _ in left] == ["decode stage (minimum, 1 task)"]
    assert not unplaced(demands, nodes(3))
    assert not unplaced(training_demands(experiment("parallel.num_workers=1")), nodes(2))
    # Workers are placed one bundle per node, never split: 2 x 1.5 CPU do not fit 2 nodes of 2 CPUs + decode.
    assert unplaced(training_demands(experiment("parallel.num_workers=2", "parallel.cpus_per_worker=1.5")), nodes(2, 2))


def test_gpus_custom_resources_and_decode_memory_count():
    gpu_run = experiment("parallel.use_gpu=true", "parallel.num_workers=2")
    assert unplaced(training_demands(gpu_run), nodes(16))  # no GPU anywhere
    with_gpus = [Node("g", {"CPU": 16.0, "GPU": 2.0, "memory": 64 * 2**30})]
    assert not unplaced(training_demands(gpu_run), with_gpus)
    decode_elsewhere = experiment("data.decode_resource=cpu_pool", "parallel.num_workers=1")
    assert unplaced(training_demands(decode_elsewhere), nodes(8))
    assert not unplaced(training_demands(decode_elsewhere), nodes(1) + [Node("c", {"CPU": 4.0, "memory": 8 * 2**30, "cpu_pool": 1.0})])
    assert unplaced(training_demands(experiment("data.decode_memory_mb=4096", "parallel.num_workers=1")), nodes(8, memory_gib=2))


def test_an_oversized_run_fails_at_once_naming_what_it_asked_and_the_fixes():
    cfg = experiment("parallel.num_workers=4")
    t0 = time.monotonic()
    with pytest.raises(ResourceError) as info:
        check(training_demands(cfg), wait_s=600, fixes=preflight.training_fixes(cfg), nodes_fn=lambda: nodes(2),
              autoscaler_fn=lambda: None)
    assert time.monotonic() - t0 < 1.0  # no autoscaler: no wait
    msg = str(info.value)
    for part in ("training workers: 4 x {CPU 1}", "decode stage", "1 node(s) with CPU 2", "--workers 3",
                 "parallel.cpus_per_worker", "data.decode_resource", "add CPU nodes"):
        assert part in msg, (part, msg)


def test_the_autoscaler_is_waited_for_only_when_its_node_types_could_help():
    demands = [Demand("training workers", [{"CPU": 4.0}] * 2)]
    seen = {"calls": 0}

    def growing():
        seen["calls"] += 1
        return nodes(2) + (nodes(4, 4) if seen["calls"] >= 3 else [])

    asked: list = []
    got = check(demands, wait_s=5, poll_s=0.01, nodes_fn=growing, autoscaler_fn=lambda: [("cpu4", {"CPU": 4.0}, 2)],
                request_fn=asked.append)
    assert len(got) == 3 and seen["calls"] == 3
    # The autoscaler was asked for the whole run (its target is the cluster's total), then the ask withdrawn.
    assert asked == [[{"CPU": 4.0}] * 2, []]
    # Node types too small for a 4-CPU bundle: fail now, not after the wait.
    with pytest.raises(ResourceError, match=r"nor can the autoscaler: it may add 10 more cpu2 \{CPU 2\}"):
        check(demands, wait_s=60, nodes_fn=lambda: nodes(2), autoscaler_fn=lambda: [("cpu2", {"CPU": 2.0}, 10)])
    # They could, but never come: fail after resource_wait_s with the same message.
    t0 = time.monotonic()
    with pytest.raises(ResourceError, match="within parallel.resource_wait_s=0.2"):
        check(demands, wait_s=0.2, poll_s=0.05, nodes_fn=lambda: nodes(2), autoscaler_fn=lambda: [("cpu4", {"CPU": 4.0}, 2)],
              request_fn=lambda bundles: None)
    assert time.monotonic() - t0 < 2.0


def test_a_plain_worker_leaves_the_decode_node_to_the_decode_task():
    # Review catch: first-fit in node order put the worker on the only node with the decode resource.
    cfg = experiment("parallel.num_workers=1", "data.decode_resource=decode")
    two = [Node("a", {"CPU": 1.0, "memory": 8 * 2**30, "decode": 1.0}), Node("b", {"CPU": 1.0, "memory": 8 * 2**30})]
    assert not unplaced(training_demands(cfg), two)


def test_concurrent_trials_each_need_their_own_decode_stage():
    cfg = experiment("parallel.num_workers=1")
    driver = {"CPU": 0.01}
    assert not unplaced(training_demands(cfg, 2, driver), nodes(4))
    assert unplaced(training_demands(cfg, 3, driver), nodes(4))  # 3 x (1 + 0.67) + drivers > 4


def test_node_types_come_from_the_monitors_own_config_less_the_nodes_it_has(tmp_path, monkeypatch):
    # What `ray up` (and `ray start --head --autoscaling-config`) gives the monitor on the head node.
    config = tmp_path / "ray_bootstrap_config.yaml"
    config.write_text(
        "max_workers: 5\n"
        "head_node_type: head\n"
        "available_node_types:\n"
        "  head: {resources: {CPU: 0}, node_config: {}, max_workers: 0}\n"
        "  cpu: {resources: {CPU: 32, decode: 1}, node_config: {}, min_workers: 0, max_workers: 4}\n"
        "  gpu: {resources: {CPU: 192, GPU: 8}, node_config: {}, max_workers: 2}\n")
    monkeypatch.setattr(preflight, "_monitor_config_path", lambda gcs: str(config))
    import ray

    monkeypatch.setattr(ray, "get_runtime_context", lambda: type("Ctx", (), {"gcs_address": "127.0.0.1:1"})())
    types = {name: (res, room) for name, res, room in preflight._node_types_from_monitor_config({"head": 1, "cpu": 3})}
    # cpu: its own max 4 less 3 running; gpu: its own max 2, but the cluster's max_workers 5 leaves 5 - 3 = 2.
    assert types["cpu"] == ({"CPU": 32.0, "decode": 1.0, "memory": float("inf")}, 1)
    assert types["gpu"][1] == 2 and "head" not in types
    # A node type without declared resources (a cloud provider fills them in): the types are unknown.
    config.write_text("head_node_type: head\navailable_node_types:\n  head: {resources: {}}\n  cpu: {node_config: {}}\n")
    assert preflight._node_types_from_monitor_config({}) is None
    # Undeclared memory does not refuse a decode task that asks for some.
    demand = training_demands(experiment("parallel.num_workers=1", "data.decode_memory_mb=4096"))
    assert preflight._autoscaler_could_place(demand, [], [("cpu", {"CPU": 4.0, "memory": float("inf")}, 1)])
    assert not preflight._autoscaler_could_place(demand, [], [("cpu", {"CPU": 4.0, "memory": 2.0 * 2**30}, 1)])
