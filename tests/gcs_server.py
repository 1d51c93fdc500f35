"""A real GCS endpoint for tests: `gcp-storage-emulator` (PyPI, a dev dependency) on 127.0.0.1, speaking
the JSON API that pyarrow's GcsFileSystem (google-cloud-cpp) uses, resumable uploads included.

    python tests/gcs_server.py       # start one, print its environment, stop it on Enter

Fixtures: ``gcs_server`` (session) starts one emulator, or is None where the package is missing (the
tests that need it skip, saying why); ``gcs_bucket`` (per test) creates a fresh bucket, points
STORAGE_EMULATOR_HOST (the Google Cloud client libraries' convention) at the server for the test and
yields ``gs://<bucket>``.
"""

from __future__ import annotations

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

PROJECT = "vidgen-test"
START_TIMEOUT_S = 30.0


@dataclass
class GcsServer:
    endpoint: str  # "http://127.0.0.1:PORT"
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "GOOGLE_CLOUD_PROJECT": PROJECT}

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def emulator_binary() -> str | None:
    venv_bin = str(Path(sys.prefix) / "bin")
    return shutil.which("gcp-storage-emulator", path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gcs_server(root: Path) -> GcsServer:
    binary = emulator_binary()
    if binary is None:
        raise FileNotFoundError("gcp-storage-emulator is not installed: pip install gcp-storage-emulator (a dev dependency)")
    port = _free_port()
    log_path = root / "gcs.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [binary, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root, start_new_session=True)
    server = GcsServer(endpoint=f"http://127.0.0.1:{port}", log_path=log_path, process=process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the GCS emulator exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.endpoint}/storage/v1/b?project={PROJECT}", timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    stop_gcs_server(server)
    raise RuntimeError(f"the GCS emulator did not answer within {START_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def stop_gcs_server(server: GcsServer) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GcsServer | None]:
    """One emulator for the session, or None where it cannot run (its tests skip with the reason)."""
    if emulator_binary() is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="vidgen-gcs-"))
    server = start_gcs_server(root)
    try:
        yield server
    finally:
        stop_gcs_server(server)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def gcs_bucket(gcs_server: GcsServer | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket on the emulator, with STORAGE_EMULATOR_HOST pointing at it; yields gs://<bucket>."""
    if gcs_server is None:
        pytest.skip("gcp-storage-emulator is not installed (pip install gcp-storage-emulator, a dev dependency)")
    import pyarrow.fs as pafs

    for name, value in gcs_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"vidgen-test-{uuid.uuid4().hex[:12]}"
    host = gcs_server.endpoint.split("://", 1)[1]
    pafs.GcsFileSystem(anonymous=True, endpoint_override=host, scheme="http", project_id=PROJECT).create_dir(bucket)
    yield f"gs://{bucket}"


if __name__ == "__main__":
    _root = Path(tempfile.mkdtemp(prefix="vidgen-gcs-"))
    _server = start_gcs_server(_root)
    try:
        print("\n".join(f"export {k}={v}" for k, v in _server.env().items()))
        input("Enter stops it. ")
    finally:
        stop_gcs_server(_server)
        shutil.rmtree(_root, ignore_errors=True)
