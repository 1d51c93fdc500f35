"""The "run on real clusters" files: launcher YAMLs, KubeRay manifests, runtime env, Grafana dashboard, docs.

    pytest tests/test_cluster_configs.py

Offline and fast. Launcher YAMLs go through Ray's own preparation and JSON-schema validation (what
`ray up` does before it talks to a cloud; the credentialed bootstrap is not run). KubeRay manifests are
checked as Kubernetes objects and against each other. Every path, entry point and CLI flag that the
configs and docs/cluster.md name must exist; entry points still being written make their tests skip,
naming the missing file, until they land.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
DASHBOARD = CLUSTER / "grafana" / "vidgen_dashboard.json"
RUNTIME_ENV = REPO / "jobs" / "runtime_env.yaml"
DOCS = REPO / "docs" / "cluster.md"
LAUNCHERS = ("aws", "gcp", "azure")
PYTHON_TAG = f"py{sys.version_info.major}{sys.version_info.minor}"

# Files other work is adding; a reference to one of them skips (naming it) until it exists. Anything
# else a config or the docs name must exist now.
PENDING = {
    "jobs/prepare_data.py", "jobs/train.py", "jobs/tune.py", "jobs/evaluate.py", "jobs/serve.py",
    "jobs/serve_bench.py", "tuning/dit_sweep.yaml", "README.md",
}

# Our ray.util.metrics names (Prometheus adds the ray_ prefix) -> (kind, tag keys).
TRAIN_TAGS, DATA_TAGS, SERVE_TAGS = ("run", "rank"), ("split",), ("route",)
METRICS = {
    **{f"vidgen_train_{n}": ("gauge", TRAIN_TAGS) for n in (
        "samples_per_s", "tokens_per_s", "data_wait_fraction", "step_time_s", "mfu", "loss", "gpu_memory_gb")},
    **{f"vidgen_data_{n}": ("counter", DATA_TAGS) for n in ("clips", "frames", "failures")},
    "vidgen_serve_latency_ms": ("histogram", SERVE_TAGS),
    "vidgen_serve_requests": ("counter", SERVE_TAGS + ("status",)),
    "vidgen_serve_batch_size": ("gauge", SERVE_TAGS),
}
# How Ray 2.60's Prometheus exporter names each kind (checked by scraping a live node).
SUFFIXES = {"gauge": ("",), "counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def load_launcher(cloud: str) -> dict:
    return yaml.safe_load((CLUSTER / f"{cloud}.yaml").read_text())


def load_kuberay(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((KUBERAY / f"{name}.yaml").read_text()) if d]


def cluster_files() -> list[Path]:
    return sorted(p for p in CLUSTER.rglob("*") if p.is_file()) + [RUNTIME_ENV]


def skip_if_pending(missing: set[str]) -> None:
    unknown = missing - PENDING
    assert not unknown, f"named but missing (not expected from other work either): {sorted(unknown)}"
    if missing:
        pytest.skip(f"not written yet: {', '.join(sorted(missing))}")


# --- launcher YAMLs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_config_checks():
    from ray.autoscaler._private.util import prepare_config, validate_config

    logging.getLogger("ray.autoscaler._private.util").setLevel(logging.WARNING)

    def check(config: dict) -> dict:
        prepared = prepare_config(config)  # merges the provider's defaults.yaml, as `ray up` does
        validate_config(prepared)  # ray-schema.json plus Ray's cross-field rules
        return prepared

    return check


@pytest.mark.parametrize("cloud", LAUNCHERS)
def test_launcher_config_passes_rays_schema(cloud, ray_config_checks):
    prepared = ray_config_checks(load_launcher(cloud))
    assert prepared["provider"]["type"] == cloud
    assert set(prepared["available_node_types"]) == {"head", "cpu_decode", "gpu_train", "gpu_train_spot"}


def test_rays_schema_check_rejects_broken_configs(ray_config_checks):
    import jsonschema

    fractional = load_launcher("aws")
    fractional["available_node_types"]["cpu_decode"]["resources"]["decode"] = 0.5  # must be an integer
    typo = load_launcher("aws")
    typo["head_start_ray_command"] = typo.pop("head_start_ray_commands")
    for broken in (fractional, typo):
        with pytest.raises(jsonschema.ValidationError):
            ray_config_checks(broken)
    too_many = load_launcher("aws")
    too_many["available_node_types"]["gpu_train"]["min_workers"] = too_many["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        ray_config_checks(too_many)


@pytest.mark.parametrize("cloud", LAUNCHERS)
def test_launcher_node_types(cloud):
    config = load_launcher(cloud)
    types = config["available_node_types"]
    assert config["head_node_type"] == "head"
    assert types["head"]["resources"].get("CPU") == 0, "nothing may be scheduled on the head"
    for name, marker, gpus in (("cpu_decode", "decode", 0), ("gpu_train", "train", 8)):
        node = types[name]
        resources = node["resources"]
        # The autoscaler only scales for custom resources a node type declares.
        assert resources.get(marker, 0) >= 1, f"{name} must declare the custom resource {marker!r}"
        assert resources.get("GPU") == gpus
        assert resources.get("CPU", 0) >= 8
        if cloud != "aws":  # AWS looks memory up from the instance type; GCP and Azure cannot
            assert resources.get("memory", 0) >= 16 * 2**30, f"{name} must declare memory: decode tasks request it"
        assert node["min_workers"] == 0 < node["max_workers"]
    assert sum(t.get("max_workers", 0) for t in types.values()) <= config["max_workers"]


@pytest.mark.parametrize("cloud", LAUNCHERS)
def test_launcher_images_match_this_ray_and_python(cloud):
    config = load_launcher(cloud)
    image = f"rayproject/ray:{ray.__version__}-{PYTHON_TAG}"
    docker = config["docker"]
    assert docker.get("head_image", docker["image"]) == f"{image}-cpu"
    assert config["available_node_types"]["cpu_decode"]["docker"]["worker_image"] == f"{image}-cpu"
    assert config["available_node_types"]["gpu_train"]["docker"]["worker_image"] == f"{image}-gpu"


@pytest.mark.parametrize("cloud", LAUNCHERS)
def test_launcher_installs_the_package_per_node_flavor(cloud):
    config = load_launcher(cloud)
    assert config["file_mounts"]["~/vidgen-ray"] == "."
    assert ".venv" in config["rsync_exclude"]
    assert config["setup_commands"] == [], "setup differs per node type (CPU vs CUDA torch)"
    assert "bash ~/vidgen-ray/cluster/setup_node.sh cpu" in config["head_setup_commands"]
    for name, flavor in (("cpu_decode", "cpu"), ("gpu_train", "gpu")):
        commands = config["available_node_types"][name]["worker_setup_commands"]
        assert f"bash ~/vidgen-ray/cluster/setup_node.sh {flavor}" in commands


@pytest.mark.parametrize("cloud", LAUNCHERS)
def test_launcher_keeps_token_auth_on(cloud):
    config = load_launcher(cloud)
    assert "--env=RAY_AUTH_MODE=token" in config["docker"]["run_options"], "every container needs RAY_AUTH_MODE=token"
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token", "every node needs the same token"
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert not any("RAY_AUTH_MODE" in c for c in commands), "set the mode once, in docker.run_options"


@pytest.mark.parametrize("cloud", LAUNCHERS)
def test_launcher_opens_no_port_but_ssh(cloud):
    provider = load_launcher(cloud)["provider"]
    for rule in provider.get("security_group", {}).get("IpPermissions", []):
        assert rule.get("FromPort") == rule.get("ToPort") == 22, f"inbound rule beyond SSH: {rule}"
    for port in ("8265", "3000", "9090", "10001"):
        assert port not in json.dumps(provider), f"provider config mentions port {port}"


@pytest.mark.parametrize("cloud", LAUNCHERS)
def test_launcher_reaches_storage_through_cloud_identity(cloud):
    config = load_launcher(cloud)
    types = config["available_node_types"]
    if cloud == "aws":
        assert types["head"]["node_config"]["IamInstanceProfile"]["Name"] == "vidgen-ray-head"
        for name in ("cpu_decode", "gpu_train"):
            assert types[name]["node_config"]["IamInstanceProfile"]["Name"] == "vidgen-ray-worker"
    elif cloud == "gcp":  # the head runs as Ray's ray-autoscaler-sa-v1, set by `ray up`
        storage_scopes = {"https://www.googleapis.com/auth/devstorage.read_write",
                          "https://www.googleapis.com/auth/devstorage.full_control",
                          "https://www.googleapis.com/auth/cloud-platform"}
        for name in ("cpu_decode", "gpu_train"):
            (account,) = types[name]["node_config"]["serviceAccounts"]
            assert account["email"].endswith(".iam.gserviceaccount.com")
            assert storage_scopes & set(account["scopes"])
    else:
        assert config["provider"]["msi_name"] and config["provider"]["msi_resource_group"], (
            "a shared user-assigned identity (msi_name + msi_resource_group) holds the storage role")


def test_aws_policies_are_scoped():
    s3 = json.loads((CLUSTER / "iam" / "aws-s3-policy.json").read_text())
    actions = {a for statement in s3["Statement"] for a in statement["Action"]}
    assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:DeleteObject", "s3:AbortMultipartUpload"} <= actions
    assert all(statement["Resource"] != "*" for statement in s3["Statement"])
    head = json.loads((CLUSTER / "iam" / "aws-head-policy.json").read_text())
    pass_role = [s for s in head["Statement"] if s["Action"] == "iam:PassRole"]
    assert pass_role and pass_role[0]["Resource"].endswith(":role/vidgen-ray-worker")


# --- secrets and token auth across every cluster file -------------------------------------------------

SECRET_PATTERNS = [
    re.compile(p, re.IGNORECASE | re.MULTILINE) for p in (
        r"AKIA[0-9A-Z]{16}",  # an AWS access key id
        r"aws_(secret_access_key|access_key_id|session_token)",
        r"aws_credentials|gcp_credentials",  # launcher fields that embed cloud credentials
        r"AccountKey=|AZURE_STORAGE_(ACCOUNT_KEY|SAS_TOKEN)|AZURE_CLIENT_SECRET|SharedAccessSignature",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
        r"GOOGLE_APPLICATION_CREDENTIALS|\"private_key(_id)?\"\s*:",
        r"RAY_AUTH_TOKEN\s*[:=]\s*[\"']?[A-Za-z0-9+/_-]{16,}",  # a literal token value
        r"^\s*(stringData|data)\s*:\s*$",  # a Kubernetes Secret's payload
    )
]
AUTH_DISABLED = re.compile(r"RAY_AUTH_MODE\W{0,3}disabled|mode:\s*disabled", re.IGNORECASE)


def secrets_in(text: str) -> list[str]:
    return [m.group(0) for pattern in SECRET_PATTERNS for m in pattern.finditer(text)]


def test_secret_scanner_finds_planted_credentials():
    for planted in ("aws_secret_access_key = wJalrXUtnFEMI", "AKIAIOSFODNN7EXAMPLE",
                    "DefaultEndpointsProtocol=https;AccountKey=abc==", "kind: Secret\nstringData:\n  auth_token: x",
                    "RAY_AUTH_TOKEN=0123456789abcdef0123"):
        assert secrets_in(planted), planted


@pytest.mark.parametrize("path", cluster_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_credentials_and_no_disabled_auth(path):
    text = path.read_text()
    assert not secrets_in(text), f"{path.relative_to(REPO)} holds credentials: {secrets_in(text)}"
    assert not AUTH_DISABLED.search(text), f"{path.relative_to(REPO)} turns token authentication off"


# --- KubeRay ------------------------------------------------------------------------------------------

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def containers_of(node) -> list[dict]:
    """Every container spec anywhere in a manifest."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "containers" and isinstance(value, list):
                found += value
            found += containers_of(value)
    elif isinstance(node, list):
        for item in node:
            found += containers_of(item)
    return found


def test_kuberay_manifests_are_kubernetes_objects():
    names = sorted(p.stem for p in KUBERAY.glob("*.yaml"))
    assert {"raycluster", "rayjob", "rayjob-tune", "serviceaccount"} <= set(names)
    for name in names:
        for doc in load_kuberay(name):
            assert isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str), name
            assert DNS_LABEL.match(doc["metadata"]["name"]), f"{name}: bad metadata.name"
            for container in containers_of(doc):
                assert container.get("name") and container.get("image"), f"{name}: container without name/image"
                assert container.get("resources", {}).get("requests"), f"{name}: {container['name']} has no requests"


def ray_cluster() -> dict:
    (doc,) = load_kuberay("raycluster")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    return doc


def custom_resources(group: dict) -> dict:
    """rayStartParams.resources holds a JSON object as a quoted, escaped shell word: "{\\"train\\": 1}"."""
    return json.loads(json.loads(group["rayStartParams"]["resources"]))


def test_raycluster_spec():
    cluster = ray_cluster()
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"]["mode"] == "token"
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", "reach the head with kubectl port-forward"
    assert not head.get("enableIngress")
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu-decode", "gpu-train"}
    assert custom_resources(groups["cpu-decode"]) == {"decode": 1}
    assert custom_resources(groups["gpu-train"]) == {"train": 1}
    (account,) = load_kuberay("serviceaccount")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for group, flavor, gpus in ((head, "cpu", 0), (groups["cpu-decode"], "cpu", 0), (groups["gpu-train"], "gpu", 8)):
        pod = group["template"]["spec"]
        assert pod["serviceAccountName"] == account["metadata"]["name"]
        (container,) = pod["containers"]
        assert container["image"].endswith(f"/vidgen-ray:{version}-{flavor}"), "not the tag docs/cluster.md builds"
        assert int(container["resources"]["limits"].get("nvidia.com/gpu", 0)) == gpus
    for group in groups.values():
        assert 0 == group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_rayjobs_match_the_raycluster_and_runtime_env():
    cluster = ray_cluster()
    runtime_env = yaml.safe_load(RUNTIME_ENV.read_text())
    (train,) = load_kuberay("rayjob")
    (tune,) = load_kuberay("rayjob-tune")
    assert train["spec"]["rayClusterSpec"] == cluster["spec"], "rayjob.yaml's cluster drifted from raycluster.yaml"
    assert tune["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    for job, script in ((train, "jobs/train.py"), (tune, "jobs/tune.py")):
        assert job["kind"] == "RayJob"
        assert shlex.split(job["spec"]["entrypoint"])[:2] == ["python", script]
        job_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
        assert job_env.pop("working_dir") == "/home/ray/vidgen-ray"  # WORKDIR of cluster/docker/Dockerfile
        assert job_env == runtime_env, f"{job['metadata']['name']}: runtimeEnvYAML drifted from jobs/runtime_env.yaml"


def test_serviceaccount_carries_workload_identity():
    (account,) = load_kuberay("serviceaccount")
    assert account["kind"] == "ServiceAccount"
    assert {"eks.amazonaws.com/role-arn", "iam.gke.io/gcp-service-account",
            "azure.workload.identity/client-id"} <= set(account["metadata"]["annotations"])


def test_dockerfile_builds_on_this_ray_from_existing_files():
    text = (CLUSTER / "docker" / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-{PYTHON_TAG}-${{FLAVOR}}" in text
    assert "WORKDIR /home/ray/vidgen-ray" in text
    assert 'bash cluster/setup_node.sh "${FLAVOR}"' in text
    sources = {s for line in text.splitlines() if line.startswith("COPY")
               for s in line.split()[1:-1] if not s.startswith("--")}
    skip_if_pending({s for s in sources if not (REPO / s).exists()})


# --- runtime env -------------------------------------------------------------------------------------


def test_runtime_env_is_valid_and_uploads_only_the_code():
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes
    from ray.runtime_env import RuntimeEnv

    config = yaml.safe_load(RUNTIME_ENV.read_text())
    RuntimeEnv(**config, working_dir=".")  # Ray's own validation of every field
    assert not {"pip", "uv", "conda", "container", "image_uri"} & set(config), "nodes carry the dependencies"
    assert "RAY_AUTH_MODE" not in config.get("env_vars", {})
    uploaded, size = set(), 0

    def add(path: Path) -> None:
        nonlocal size
        if path.is_file():
            uploaded.add(path.relative_to(REPO).as_posix())
            size += path.stat().st_size

    # What `--working-dir .` would upload with this file's excludes alone (.gitignore switched off).
    _dir_travel(REPO, [_get_excludes(REPO, config["excludes"])], add, include_gitignore=False)
    assert {"vidgen_ray/__init__.py", "jobs/runtime_env.yaml", "pyproject.toml"} <= uploaded
    leaked = sorted(f for f in uploaded if f.split("/")[0] in {".venv", "outputs", ".git", "build"})
    assert not leaked, leaked[:5]
    assert size < 50 * 2**20, f"working dir upload is {size / 2**20:.0f} MiB"


# --- shell scripts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("script", sorted(CLUSTER.glob("*.sh")), ids=lambda p: p.name)
def test_shell_scripts_parse(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_setup_node_refuses_an_unknown_flavor_before_installing():
    result = subprocess.run(["bash", str(CLUSTER / "setup_node.sh"), "tpu"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage: setup_node.sh cpu|gpu" in result.stderr


# --- Grafana dashboard -------------------------------------------------------------------------------


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(board: dict, variables: bool = True) -> list[str]:
    """Panel PromQL, plus the templating queries (Grafana's label_values(...), not PromQL) if asked."""
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    if variables:
        exprs += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_dashboard_is_grafana_json_with_a_datasource_variable():
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 37  # Grafana 10+
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    graphs = [p for p in board["panels"] if p["type"] != "row"]
    assert len(graphs) >= 12
    for panel in graphs:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]


def test_dashboard_queries_use_our_metrics_by_their_prometheus_names():
    board = dashboard()
    used = set()
    for expr in queries(board):
        names = re.findall(r"\bray_[a-z0-9_]+", expr)
        assert names, f"query names no metric: {expr}"
        for full in names:
            base = next((m for m in METRICS if full in (f"ray_{m}{s}" for s in SUFFIXES[METRICS[m][0]])), None)
            assert base, f"{full} is not one of our metrics under its Prometheus name (kind suffix included)"
            used.add(base)
            kind, tags = METRICS[base]
            for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
                labels = {label.strip() for label in group.split(",")} - {"le"}
                assert labels <= set(tags), f"{expr}: groups by labels {labels - set(tags)} that {base} lacks"
    assert used == set(METRICS), f"no panel for {sorted(set(METRICS) - used)}"
    latency = " ".join(q for q in queries(board) if "ray_vidgen_serve_latency_ms_bucket" in q)
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in latency


def test_dashboard_queries_parse_as_promql():
    promql = pytest.importorskip("promql_parser", reason="PromQL syntax check needs the promql-parser package")
    grafana_variables = {"$__rate_interval": "1m", "$run": ".*", "$route": ".*"}
    for expr in queries(dashboard(), variables=False):
        for variable, value in grafana_variables.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        promql.parse(expr)  # raises ValueError naming the syntax error


@pytest.mark.parametrize("family", ("train", "data", "serve"))
def test_dashboard_metric_names_match_the_code(family):
    prefix = f"vidgen_{family}_"
    sources = [p.read_text() for p in (REPO / "vidgen_ray").rglob("*.py") if prefix in p.read_text()]
    if not sources:
        pytest.skip(f"no code records {prefix}* metrics yet")
    code = "\n".join(sources)
    for name in (m for m in METRICS if m.startswith(prefix)):
        short = name[len(prefix):]
        assert re.search(rf"[\"']({name}|{short})[\"']", code), f"{name} is on the dashboard but not in the code"


# --- docs/cluster.md and every path, command and flag named ------------------------------------------

PATH_RE = re.compile(r"(?<![\w.~$-])((?:cluster|jobs|tuning|docs|tests|vidgen_ray|benchmarks)(?:/[\w.-]+)+/?)")


def test_every_named_path_exists():
    named = set()
    for path in [DOCS, *cluster_files()]:
        named |= {m.rstrip(".") for m in PATH_RE.findall(path.read_text())}
    assert "cluster/setup_node.sh" in named and "jobs/train.py" in named  # the scan sees what it should
    skip_if_pending({n for n in named if not (REPO / n).exists()})


def test_docs_cover_every_cluster_file():
    text = DOCS.read_text()
    files = [p.relative_to(REPO).as_posix() for p in cluster_files()]
    undocumented = [f for f in files if f not in text]
    assert not undocumented, f"docs/cluster.md does not mention {undocumented}"


def doc_commands() -> list[list[str]]:
    """Shell commands of docs/cluster.md's bash blocks, continuation lines joined, env assignments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", DOCS.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                words.pop(0)
            if words:
                commands.append(words)
    assert len(commands) > 20
    return commands


def test_docs_ray_commands_use_real_subcommands_and_flags():
    import click
    from ray.scripts.scripts import cli

    checked = 0
    for words in doc_commands():
        if words[0] != "ray":
            continue
        command, rest = cli, words[1:]
        while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
            assert rest[0] in command.commands, f"`ray ... {rest[0]}` is no Ray {ray.__version__} command: {words}"
            command, rest = command.commands[rest[0]], rest[1:]
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        for word in rest[: rest.index("--")] if "--" in rest else rest:
            if word.startswith("-"):
                assert word.split("=")[0] in options, f"`{word}` is not an option of `{command.name}`: {words}"
        checked += 1
    assert checked >= 8


def entry_point_calls() -> list[list[str]]:
    """`python jobs/X.py ...` in docs/cluster.md (also after `--`) and in the RayJob entrypoints."""
    calls = []
    entrypoints = [load_kuberay(name)[0]["spec"]["entrypoint"] for name in ("rayjob", "rayjob-tune")]
    commands = doc_commands() + [shlex.split(e) for e in entrypoints]
    for words in commands:
        for i, word in enumerate(words[:-1]):
            if word == "python" and words[i + 1].startswith("jobs/"):
                calls.append(words[i + 1:])
    assert {c[0] for c in calls} >= {"jobs/train.py", "jobs/tune.py"}
    return calls


def run_job_script(args: list[str], timeout: int = 180) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "HOME": str(Path.home())}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_docs_entry_points_accept_the_flags_they_are_given():
    calls = entry_point_calls()
    missing = {c[0] for c in calls if not (REPO / c[0]).exists()}
    helps = {}
    for script, *args in (c for c in calls if c[0] not in missing):
        if script not in helps:
            result = run_job_script([script, "--help"])
            assert result.returncode == 0, f"{script} --help failed:\n{result.stderr[-2000:]}"
            helps[script] = result.stdout
        for flag in (a.split("=")[0] for a in args if a.startswith("--")):
            assert flag in helps[script], f"{script} has no {flag} (docs/cluster.md or a RayJob passes it)"
    skip_if_pending(missing)  # the scripts that exist passed; the rest are checked once they land


def test_docs_training_commands_resolve_to_valid_configs():
    calls = list({tuple(args): None for script, *args in entry_point_calls() if script == "jobs/train.py"})
    skip_if_pending(set() if (REPO / "jobs/train.py").exists() else {"jobs/train.py"})
    if "--dry-run" not in run_job_script(["jobs/train.py", "--help"]).stdout:
        pytest.skip("jobs/train.py has no --dry-run to resolve a config without training")
    # One interpreter for all commands: the config import (torch) dominates the cost.
    driver = (
        "import json, runpy, sys\n"
        "codes = []\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    sys.argv = ['jobs/train.py', *args, '--dry-run']\n"
        "    try:\n"
        "        runpy.run_path('jobs/train.py', run_name='__main__'); codes.append(0)\n"
        "    except SystemExit as stop:\n"
        "        codes.append(stop.code or 0)\n"
        "print('CODES', json.dumps(codes))\n"
    )
    result = run_job_script(["-c", driver, json.dumps(calls)], timeout=300)
    codes = json.loads(result.stdout.rsplit("CODES", 1)[1]) if "CODES" in result.stdout else None
    assert codes == [0] * len(calls), f"exit codes {codes} for {calls}:\n{result.stderr[-3000:]}"


def test_every_node_keeps_the_decode_pool_warm():
    """Ray keeps one idle worker per CPU; data.decode_tasks_per_cpu (1.5) needs its extra processes kept
    between streams: every launcher's `ray start` and every KubeRay worker group sets the soft limit."""
    from vidgen_ray.data.config import DataConfig

    ratio = DataConfig.decode_tasks_per_cpu
    for cloud in LAUNCHERS:
        config = load_launcher(cloud)
        for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
            if "ray start" in command:
                assert f"RAY_num_workers_soft_limit=$(( $(nproc) * {int(ratio * 2)} / 2 )) ray start" in command, cloud
    for group in ray_cluster()["spec"]["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        cpus = int(container["resources"]["limits"]["cpu"])
        assert env.get("RAY_num_workers_soft_limit") == str(int(cpus * ratio)), group["groupName"]


@pytest.mark.parametrize("cloud", LAUNCHERS)
def test_launcher_has_a_spot_twin_of_the_gpu_nodes_for_elastic_runs(cloud):
    types = load_launcher(cloud)["available_node_types"]
    spot, on_demand = types["gpu_train_spot"], types["gpu_train"]
    assert spot["resources"] == on_demand["resources"] and spot["docker"] == on_demand["docker"]
    assert spot["min_workers"] == 0 < spot["max_workers"]
    config = spot["node_config"]
    market = {"aws": lambda c: c["InstanceMarketOptions"]["MarketType"] == "spot",
              "gcp": lambda c: c["scheduling"]["provisioningModel"] == "SPOT",
              "azure": lambda c: c["azure_arm_parameters"]["priority"] == "Spot"}[cloud]
    assert market(config) and not market_or_none(market, on_demand["node_config"])
    # Everything else about the machine is the on-demand node's (the YAML merges it in).
    strip = {"aws": ("InstanceMarketOptions",), "gcp": ("scheduling",), "azure": ()}[cloud]
    same = lambda c: {k: v for k, v in c.items() if k not in strip}  # noqa: E731
    if cloud == "azure":
        arm = lambda c: {k: v for k, v in c["azure_arm_parameters"].items() if k not in ("priority", "evictionPolicy", "billingProfile")}  # noqa: E731
        assert arm(config) == arm(on_demand["node_config"])
    else:
        assert same(config) == same(on_demand["node_config"])


def market_or_none(check, config) -> bool:
    try:
        return check(config)
    except KeyError:
        return False
