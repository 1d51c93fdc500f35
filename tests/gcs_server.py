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
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from server_process import ServerProcess, for_session, free_port, run_until_enter

PROJECT = "vidgen-test"


@dataclass
class GcsServer:
    endpoint: str  # "http://127.0.0.1:PORT"
    proc: ServerProcess

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "GOOGLE_CLOUD_PROJECT": PROJECT}


def emulator_binary() -> str | None:
    venv_bin = str(Path(sys.prefix) / "bin")
    return shutil.which("gcp-storage-emulator", path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def start_gcs_server(root: Path) -> GcsServer:
    binary = emulator_binary()
    if binary is None:
        raise FileNotFoundError("gcp-storage-emulator is not installed: pip install gcp-storage-emulator (a dev dependency)")
    port = free_port()
    proc = ServerProcess.launch("the GCS emulator", [binary, "start", "--host", "127.0.0.1", "--port", str(port),
                                                     "--in-memory"], root)
    server = GcsServer(endpoint=f"http://127.0.0.1:{port}", proc=proc)
    proc.wait_ready(lambda: _answers(f"{server.endpoint}/storage/v1/b?project={PROJECT}"))
    return server


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GcsServer | None]:
    """One emulator for the session, or None where it cannot run (its tests skip with the reason)."""
    if emulator_binary() is None:
        yield None
        return
    yield from for_session("vidgen-gcs-", start_gcs_server)


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
    run_until_enter("vidgen-gcs-", start_gcs_server)
