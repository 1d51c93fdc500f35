"""A real MLflow tracking server for tests, on 127.0.0.1, with its own artifact store.

The server is the full ``mlflow`` package, which pins pyarrow below the version Ray uses, so it lives
in its own virtual environment (``.cache/mlflow-server``, made on first use from the package index
and reused; ``VIDGEN_MLFLOW_SERVER_VENV`` points elsewhere). The tests' client is ``mlflow-skinny``
in the project's environment, as a user's would be. Skipped, saying why, where the server cannot
be installed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90.0


INSTALL_WAIT_S = 900.0


def server_venv() -> Path:
    """The server's environment: ready (``.ready``), being installed by .ci/run in the background
    (``.installing``: wait for it), or installed here."""
    venv = Path(os.environ.get("VIDGEN_MLFLOW_SERVER_VENV", REPO / ".cache" / "mlflow-server"))
    ready, installing = venv / ".ready", venv / ".installing"
    deadline = time.time() + INSTALL_WAIT_S
    while installing.exists() and not ready.exists() and time.time() < deadline:
        time.sleep(2)
    if ready.exists():
        return venv
    venv.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "mlflow"], capture_output=True, text=True)
    if install.returncode != 0 or not (venv / "bin" / "mlflow").exists():
        pytest.skip(f"the MLflow server could not be installed into {venv}: {install.stderr.strip()[-500:]}")
    ready.touch()
    return venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """``http://127.0.0.1:PORT`` of a running ``mlflow server`` (SQLite backend, proxied artifacts)."""
    venv = server_venv()
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [str(venv / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=root)
    deadline = time.time() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()
