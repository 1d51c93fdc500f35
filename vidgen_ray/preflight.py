"""Resource preflight: can this cluster place what a run asks for, all at once? Answered in seconds,
before any trainer, sweep or evaluation starts, instead of a job that waits forever.

Ray Train places its workers in a placement group; Ray Data's decode tasks run outside it, on what is
left, and Ray Data leaves Train's reservation out of its own budget. A run whose workers take the last
CPU therefore starts and then waits forever for its first clip (2 workers on a 2-CPU head node did,
for 8 minutes, until stopped by hand). So every run is checked as a whole: the training workers (one
bundle each), the decode stage's minimum (one decode task), Tune's concurrent trials (each with its
own workers and decode task) and evaluation actors, bin-packed onto the cluster's nodes.

If they do not fit and an autoscaler could add nodes that make them fit, the run asks the autoscaler
for them and waits up to ``parallel.resource_wait_s``, saying so; otherwise it fails at once with one
message: what was asked, what the cluster has, and the fixes.

    python -c "import ray; ray.init(num_cpus=2); from vidgen_ray import preflight; \\
print(preflight.check([preflight.Demand('training workers', [{'CPU': 1.0}] * 3)], wait_s=0))"
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from vidgen_ray.errors import UserError
from vidgen_ray.runtime import get_logger

log = get_logger("preflight")

GiB = 2**30


class ResourceError(UserError):
    """The cluster cannot place the run (now, or after the autoscaler's wait)."""


@dataclass
class Demand:
    """Part of a run: ``bundles`` must each fit on one node, all at the same time."""

    what: str  # "training workers", "decode stage (minimum)", ...
    bundles: list[dict[str, float]]


@dataclass
class Node:
    name: str
    resources: dict[str, float]
    free: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.free = dict(self.resources)

    def take(self, bundle: dict[str, float]) -> bool:
        if all(self.free.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items() if v > 0):
            for k, v in bundle.items():
                self.free[k] = self.free.get(k, 0.0) - v
            return True
        return False


_BOOKKEEPING = ("node:", "accelerator_type", "object_store_memory")  # Ray's own, never asked for by a run


def _custom(resources: dict[str, float]) -> set[str]:
    return {k for k in resources if k not in ("CPU", "GPU", "memory") and not k.startswith(_BOOKKEEPING)}


def unplaced(demands: list[Demand], nodes: list[Node]) -> list[tuple[str, dict[str, float]]]:
    """The bundles that do not fit when every demand is placed together. The most constrained go first
    (a custom resource, then GPUs, then size), and a bundle prefers the nodes with the fewest custom
    resources it does not ask for: a plain worker must not take the CPU of the one node a decode task
    (``data.decode_resource``) can run on."""
    nodes = [Node(n.name, n.resources) for n in nodes]  # fresh free counts
    todo = [(d.what, b) for d in demands for b in d.bundles]
    todo.sort(key=lambda wb: (bool(_custom(wb[1])), wb[1].get("GPU", 0.0), wb[1].get("CPU", 0.0), wb[1].get("memory", 0.0)),
              reverse=True)
    missing = []
    for what, bundle in todo:
        asked = _custom(bundle)
        order = sorted(nodes, key=lambda n: len(_custom(n.resources) - asked))
        if not any(n.take(bundle) for n in order):
            missing.append((what, bundle))
    return missing


def cluster_nodes() -> list[Node]:
    import ray

    return [Node(n.get("NodeManagerHostname") or n["NodeID"][:8], dict(n["Resources"]))
            for n in ray.nodes() if n.get("Alive")]


def _fmt(resources: dict[str, float]) -> str:
    """CPU, GPU, memory, then custom resources; Ray's bookkeeping ones (node:..., object store) left out."""
    keys = sorted((k for k in resources if not k.startswith(_BOOKKEEPING)), key=lambda k: (k not in ("CPU", "GPU", "memory"), k))
    return ", ".join(f"memory {resources[k] / GiB:.1f} GiB" if k == "memory" else f"{k} {resources[k]:g}" for k in keys) or "nothing"


def describe(demands: list[Demand]) -> str:
    out = []
    for d in demands:
        if not d.bundles:
            continue
        first = d.bundles[0]
        same = all(b == first for b in d.bundles)
        out.append(f"{d.what}: {len(d.bundles)} x {{{_fmt(first)}}}" if same
                   else f"{d.what}: " + " + ".join("{" + _fmt(b) + "}" for b in d.bundles))
    return "; ".join(out)


def _totals(nodes: list[Node]) -> dict[str, float]:
    total: dict[str, float] = {}
    for n in nodes:
        for k, v in n.resources.items():
            total[k] = total.get(k, 0.0) + v
    return total


def check(demands: list[Demand], wait_s: float = 0.0, fixes: str = "", poll_s: float = 5.0,
          nodes_fn=cluster_nodes, autoscaler_fn=None, request_fn=None,
          wait_setting: str = "parallel.resource_wait_s") -> list[Node]:
    """Raise ``ResourceError`` unless ``demands`` fit the cluster together; returns the nodes seen.
    Waits up to ``wait_s`` (the config field ``wait_setting``) for an autoscaler that could add the
    missing nodes, having asked it for the whole run."""
    nodes = nodes_fn()
    missing = unplaced(demands, nodes)
    if not missing:
        log.info("preflight: %s fit on %d node(s) (%s)", describe(demands), len(nodes), _fmt(_totals(nodes)))
        return nodes
    autoscaler_fn = autoscaler_fn or autoscaler_node_types
    node_types = autoscaler_fn()
    could = node_types is not None and _autoscaler_could_place(demands, nodes, node_types)

    def message(lead: str) -> str:
        what, bundle = missing[0]
        return (f"{lead}: the run asks for {describe(demands)}; the cluster has {len(nodes)} node(s) with "
                f"{_fmt(_totals(nodes))} in all, and {len(missing)} bundle(s) do not fit (first: {what} "
                f"{{{_fmt(bundle)}}}). Fixes: {fixes or 'ask for less, or add nodes'}")

    if not could:
        why = ("" if node_types is None else
               f" (nor can the autoscaler: it may add {_fmt_node_types(node_types)})")
        raise ResourceError(message(f"this cluster cannot run this job{why}"))
    request = request_fn or request_from_autoscaler
    # request_resources() sets the cluster's whole target (packed onto the nodes as if they were idle):
    # ask for every bundle of the run, not only the missing ones, and withdraw the ask afterwards so the
    # cluster can scale down again.
    request([b for d in demands for b in d.bundles])
    log.warning("preflight: %s; waiting up to %.0f s for the autoscaler to add nodes",
                message("not enough resources yet").split(". Fixes:")[0], wait_s)
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
            nodes = nodes_fn()
            missing = unplaced(demands, nodes)
            if not missing:
                log.info("preflight: the autoscaler added what was missing (%d node(s))", len(nodes))
                return nodes
    finally:
        request([])
    raise ResourceError(message(f"the autoscaler did not add the missing nodes within {wait_setting}={wait_s:g} s"))


def _fmt_node_types(node_types: list[tuple[str, dict, int]]) -> str:
    return ", ".join(f"{room} more {name} {{{_fmt({k: v for k, v in res.items() if v != float('inf')})}}}"
                     for name, res, room in node_types) or "no nodes"


def _autoscaler_could_place(demands: list[Demand], nodes: list[Node], node_types: list[tuple[str, dict, int]]) -> bool:
    """Whether the current nodes plus every node the autoscaler may still launch would fit (unknown
    node types: assume it could, and let the wait decide)."""
    if not node_types:
        return True
    extra = [Node(f"{name} (new)", dict(res)) for name, res, room in node_types for _ in range(max(0, min(room, 64)))]
    return not unplaced(demands, nodes + extra)


def autoscaler_node_types() -> list[tuple[str, dict[str, float], int]] | None:
    """(node type, its resources, how many more the autoscaler may launch) when the cluster has an
    autoscaler; ``[]`` when one runs but its node types cannot be read (its config is neither published
    in the GCS nor on this host: a driver off the head node, KubeRay's operator); None when there is none
    (a plain ``ray start``, a local instance: Ray's monitor then runs "read-only", one pseudo-type per node)."""
    try:
        published = _node_types_from_cluster_config()
        if published:
            return published
        in_use = _autoscaler_nodes_by_type()
        if in_use is None:
            return None
        return _node_types_from_monitor_config(in_use) or []
    except Exception as exc:  # noqa: BLE001 - an unreadable autoscaler state means: do not wait
        log.debug("no autoscaler found: %s", exc)
        return None


def _node_types_from_cluster_config() -> list[tuple[str, dict[str, float], int]] | None:
    """The cluster config a platform may publish in the GCS (Ray Data reads the same key)."""
    import ray._private.state

    cfg = ray._private.state.state.get_cluster_config()
    if not cfg or not cfg.node_group_configs:
        return None
    groups = [(g.name, dict(g.resources), 64 if g.max_count == -1 else g.max_count) for g in cfg.node_group_configs]
    return groups if any(room > 0 for _, _, room in groups) else None


def _autoscaler_nodes_by_type() -> dict[str, int] | None:
    """Nodes (running or being launched) per node type, from the autoscaler v1/v2 status; None when
    no autoscaler that can add nodes runs (the read-only monitor's types are ``node_<id>``)."""
    import json

    import ray
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    gcs = ray._private.worker.global_worker.gcs_client
    counts: dict[str, int] = {}
    if is_autoscaler_v2(fetch_from_server=True, gcs_client=gcs):
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
        for n in status.active_nodes + status.idle_nodes:
            counts[n.ray_node_type_name] = counts.get(n.ray_node_type_name, 0) + 1
        for launch in status.pending_launches:
            counts[launch.ray_node_type_name] = counts.get(launch.ray_node_type_name, 0) + launch.count
    else:
        raw = gcs.internal_kv_get(b"__autoscaling_status", None)
        if not raw:
            return None  # no monitor at all (ray start --no-monitor)
        status = json.loads(raw)
        if time.time() - float(status.get("time", 0)) > 120:
            return None  # stale: the monitor is gone
        report = status.get("autoscaler_report") or {}
        for key in ("active_nodes", "pending_launches"):
            for name, count in (report.get(key) or {}).items():
                counts[name] = counts.get(name, 0) + int(count)
    known = {n["NodeID"] for n in ray.nodes()}  # dead ones too: a node that just died keeps its pseudo-type a while
    if all(name.startswith("node_") and name[5:] in known for name in counts):
        return None  # the read-only monitor: nothing can be added
    return counts


def _monitor_config_path(gcs_address: str) -> str | None:
    """The ``--autoscaling-config`` of the monitor serving ``gcs_address``, when that monitor runs on
    this host: a ``ray job submit`` entrypoint runs on the head node, where the monitor runs (``ray up``
    gives it ~/ray_bootstrap_config.yaml; ``ray start --head --autoscaling-config=...`` the file named)."""
    import glob

    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:  # a process that ended meanwhile, or one we may not read
            continue
        if not any(a.endswith("autoscaler/_private/monitor.py") for a in args):
            continue
        if f"--gcs-address={gcs_address}" not in args:
            continue
        for a in args:
            if a.startswith("--autoscaling-config="):
                return os.path.expanduser(a.split("=", 1)[1])
    return None


def _node_types_from_monitor_config(in_use: dict[str, int]) -> list[tuple[str, dict[str, float], int]] | None:
    """The worker node types of the autoscaling config file this cluster's monitor runs with, with room =
    the type's ``max_workers`` less its nodes now (and never more than the cluster's ``max_workers`` left).
    None when the file is not on this host or a node type does not declare its resources (a cloud
    provider then fills them in from the instance type, which only the autoscaler knows)."""
    import ray
    import yaml

    path = _monitor_config_path(ray.get_runtime_context().gcs_address)
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    head = cfg.get("head_node_type")
    types = {name: t for name, t in (cfg.get("available_node_types") or {}).items() if name != head}
    if not types or any("resources" not in t for t in types.values()):
        return None
    workers_now = sum(count for name, count in in_use.items() if name in types)
    cluster_room = int(cfg.get("max_workers", 64)) - workers_now
    out = []
    for name, t in types.items():
        resources = {k: float(v) for k, v in t["resources"].items()}
        # A node type that does not declare memory gets what its machine has: do not refuse on memory.
        resources.setdefault("memory", float("inf"))
        room = min(int(t.get("max_workers", cfg.get("max_workers", 64))) - in_use.get(name, 0), cluster_room)
        out.append((name, resources, max(0, room)))
    log.debug("autoscaler node types from %s: %s", path, out)
    return out


def request_from_autoscaler(bundles: list[dict[str, float]]) -> None:
    """The autoscaler's target for this run ([] withdraws it)."""
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[{k: v for k, v in b.items() if v > 0} for b in bundles])
    except Exception as exc:  # noqa: BLE001 - the wait still tells the user what is missing
        log.warning("could not ask the autoscaler for %d bundle(s): %s", len(bundles), exc)


# --- what each kind of run asks for -------------------------------------------------------------------


def decode_minimum(data_cfg) -> Demand:
    """One decode task: the least the decode stage needs to make progress."""
    from vidgen_ray.data.pipeline import decode_task_shape

    per_task, _ = decode_task_shape(data_cfg, 1)
    bundle = {"CPU": per_task, "memory": data_cfg.decode_memory_mb * 2**20}
    if data_cfg.decode_resource:
        bundle[data_cfg.decode_resource] = 0.01
    return Demand("decode stage (minimum, 1 task)", [bundle])


def worker_bundles(parallel) -> list[dict[str, float]]:
    bundle = {"CPU": parallel.cpus_per_worker}
    if parallel.use_gpu:
        bundle["GPU"] = 1.0
    if parallel.worker_resource:
        bundle[parallel.worker_resource] = 0.01
    return [dict(bundle) for _ in range(parallel.fewest_workers)]  # an elastic run starts at its minimum


def training_demands(cfg, trials: int = 1, trial_driver: dict[str, float] | None = None) -> list[Demand]:
    """A training run (or ``trials`` concurrent Tune trials of it, each with its driver's request)."""
    demands = []
    for t in range(trials):
        tag = f"trial {t + 1}: " if trials > 1 else ""
        demands.append(Demand(f"{tag}training workers", worker_bundles(cfg.parallel)))
        d = decode_minimum(cfg.data)
        demands.append(Demand(f"{tag}{d.what}", d.bundles))
        if trial_driver:
            demands.append(Demand(f"{tag}trial driver", [dict(trial_driver)]))
    return demands


def training_fixes(cfg) -> str:
    p = cfg.parallel
    fewer = max(1, p.num_workers - 1)
    return (f"fewer workers (--workers {fewer}); smaller workers (parallel.cpus_per_worker="
            f"{max(0.25, p.cpus_per_worker / 2):g}: they time-share the cores); decode on other nodes "
            f"(data.decode_resource=<a custom resource of your CPU nodes>); or add CPU{'/GPU' if p.use_gpu else ''} nodes")


def check_training(cfg, trials: int = 1, trial_driver: dict[str, float] | None = None) -> None:
    check(training_demands(cfg, trials, trial_driver), wait_s=cfg.parallel.resource_wait_s, fixes=training_fixes(cfg)
          + ("; or fewer trials at a time (max_concurrent)" if trials > 1 else ""))


def trials_that_fit(cfg, max_concurrent: int, trial_driver: dict[str, float]) -> int:
    """How many concurrent Tune trials of ``cfg`` (workers + decode minimum + driver each) the cluster
    places now; at least one is required (with the autoscaler's wait). More trials than fit would not
    just queue: each started trial's workers hold CPUs that the others' decode stages then wait for."""
    check_training(cfg, 1, trial_driver)
    nodes = cluster_nodes()
    node_types = autoscaler_node_types()
    if node_types is not None:
        # Nodes can be added: size by what the autoscaler could place, and ask it for that many trials.
        fit = max_concurrent
        while fit > 1 and not _autoscaler_could_place(training_demands(cfg, fit, trial_driver), nodes, node_types):
            fit -= 1
        request_from_autoscaler([b for d in training_demands(cfg, fit, trial_driver) for b in d.bundles])
        return fit
    fit = 1
    while fit < max_concurrent and not unplaced(training_demands(cfg, fit + 1, trial_driver), nodes):
        fit += 1
    return fit


def check_eval(eval_cfg, data_cfg=None) -> None:
    bundle = {"CPU": eval_cfg.cpus_per_actor}
    if eval_cfg.gpus_per_actor:
        bundle["GPU"] = eval_cfg.gpus_per_actor
    demands = [Demand("evaluation actors", [dict(bundle) for _ in range(eval_cfg.num_actors)])]
    if data_cfg is not None:
        demands.append(decode_minimum(data_cfg))
    check(demands, wait_s=eval_cfg.resource_wait_s, wait_setting="resource_wait_s", fixes=(f"fewer actors (--set num_actors={max(1, eval_cfg.num_actors - 1)}); "
                                         f"--set cpus_per_actor={max(0.25, eval_cfg.cpus_per_actor / 2):g}; or add nodes"))


__all__ = ["Demand", "Node", "ResourceError", "check", "check_training", "trials_that_fit", "check_eval", "unplaced"]
