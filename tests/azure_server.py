"""A real Azure Blob endpoint for tests: Azurite (the Azure Storage emulator, from the npm registry) on
127.0.0.1, a flat-namespace account as most Blob storage accounts are.

    python tests/azure_server.py     # start one, print its environment, stop it on Enter

`make setup` installs it into .cache/azurite (npm install azurite); AZURITE_BLOB may name another
`azurite-blob`. Fixtures: ``azure_server`` (session) starts one, or is None where Azurite or Node.js is
missing (the tests that need it skip, saying why); ``azure_container`` (per test) creates a fresh
container, points AZURE_STORAGE_CONNECTION_STRING (the Azure SDKs' convention) at the server for the
test and yields ``abfs://<container>``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
ACCOUNT = "devstoreaccount1"  # Azurite's well-known development account and key
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT_S = 30.0


@dataclass
class AzureServer:
    endpoint: str  # "http://127.0.0.1:PORT/devstoreaccount1"
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING":
                f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={self.endpoint};"}

    def filesystem(self):
        import pyarrow.fs as pafs

        authority = self.endpoint.split("://", 1)[1].split("/", 1)[0]
        return pafs.AzureFileSystem(account_name=ACCOUNT, account_key=KEY, blob_storage_authority=authority,
                                    dfs_storage_authority=authority, blob_storage_scheme="http", dfs_storage_scheme="http")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def azurite_binary() -> str | None:
    if os.environ.get("AZURITE_BLOB"):
        return os.environ["AZURITE_BLOB"]
    local = REPO / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    return shutil.which("azurite-blob")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_azure_server(root: Path) -> AzureServer:
    binary = azurite_binary()
    if binary is None or shutil.which("node") is None:
        raise FileNotFoundError("azurite-blob or node is missing: npm install --prefix .cache/azurite azurite")
    port = _free_port()
    log_path = root / "azurite.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(root / "data"),
             "--skipApiVersionCheck", "--loose"],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root, start_new_session=True)
    server = AzureServer(endpoint=f"http://127.0.0.1:{port}/{ACCOUNT}", log_path=log_path, process=process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited with {process.returncode}:\n{server.log_tail()}")
        if "successfully listens" in server.log_tail():
            return server
        time.sleep(0.1)
    stop_azure_server(server)
    raise RuntimeError(f"Azurite did not start within {START_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def stop_azure_server(server: AzureServer) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.fixture(scope="session")
def azure_server() -> Iterator[AzureServer | None]:
    """One Azurite for the session, or None where it cannot run (its tests skip with the reason)."""
    if azurite_binary() is None or shutil.which("node") is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="vidgen-azure-"))
    server = start_azure_server(root)
    try:
        yield server
    finally:
        stop_azure_server(server)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def azure_container(azure_server: AzureServer | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh container on Azurite, with AZURE_STORAGE_CONNECTION_STRING pointing at it; yields
    abfs://<container> (the account comes from the connection string)."""
    if azure_server is None:
        pytest.skip("Azurite is missing (npm install --prefix .cache/azurite azurite; `make setup` does it where npm exists)")
    for name in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in azure_server.env().items():
        monkeypatch.setenv(name, value)
    container = f"vidgen-test-{uuid.uuid4().hex[:12]}"
    azure_server.filesystem().create_dir(container)
    yield f"abfs://{container}"


if __name__ == "__main__":
    _root = Path(tempfile.mkdtemp(prefix="vidgen-azure-"))
    _server = start_azure_server(_root)
    try:
        print("\n".join(f"export {k}='{v}'" for k, v in _server.env().items()))
        input("Enter stops it. ")
    finally:
        stop_azure_server(_server)
        shutil.rmtree(_root, ignore_errors=True)
